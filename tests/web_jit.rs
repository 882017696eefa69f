//! Browser tests of the compiling tier (crate::jit) with the browser's own engine
//! (`WebAssembly.Module` in this page, entries in the module's function table), run by
//! `wasm-pack test --headless --chrome` like tests/web.rs: the tier must change nothing a guest
//! can see, at its most eager threshold and at the default.
#![cfg(target_arch = "wasm32")]

use wasm86::boot::linux;
use wasm86::jit::{sample, DEFAULT_THRESHOLD};
use wasm86::machine::{Machine, MachineConfig};
use wasm86::web::jit_engine;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn engine() -> Box<dyn wasm86::jit::Engine> {
    jit_engine().unwrap_or_else(|e| panic!("{e}"))
}

#[wasm_bindgen_test]
fn compiled_primes_match_the_interpreter_in_the_browser() {
    for (slice, threshold) in [(100_000, 1), (37, 1), (1, 1), (1000, 50)] {
        let cpu = sample::same_with_and_without(sample::PRIMES, slice, engine(), threshold)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cpu.mem.ram[0x8000], sample::PRIMES_BELOW_300);
        assert!(
            cpu.jit_stats().compiled_instructions > 0,
            "{:?}",
            cpu.jit_stats()
        );
    }
}

#[wasm_bindgen_test]
fn compiled_shifts_bytes_and_memory_compares_match_the_interpreter_in_the_browser() {
    for (slice, threshold) in [(100_000, 1), (29, 1), (3000, 20)] {
        sample::same_with_and_without(sample::SHIFTS_AND_BYTES, slice, engine(), threshold)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[wasm_bindgen_test]
fn a_loop_rewritten_from_another_page_runs_the_new_code_in_the_browser() {
    let cpu = sample::same_with_and_without(&sample::cross_page_rewriter(), 1000, engine(), 1)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cpu.regs[wasm86::cpu::ESI], sample::CROSS_PAGE_SUM);
}

#[wasm_bindgen_test]
fn compiled_rep_strings_match_the_interpreter_in_the_browser() {
    let code = sample::rep_strings();
    let mut plain = sample::cpu_running(&code);
    while plain.run(1_000_000) != wasm86::cpu::RunExit::Halted {}
    for (slice, threshold) in [(100_000, 1), (5, 1), (500, 3)] {
        let cpu = sample::same_with_and_without(&code, slice, engine(), threshold)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cpu.mem.ram == plain.mem.ram, "RAM differs (slice {slice})");
    }
    let code = sample::rep_compares();
    let mut plain = sample::cpu_running(&code);
    while plain.run(1_000_000) != wasm86::cpu::RunExit::Halted {}
    let cpu = sample::same_with_and_without(&code, 100_000, engine(), 1)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cpu.mem.ram == plain.mem.ram,
        "RAM differs after the compares"
    );
    for (prefix, opcode) in [(0xF3, 0xAB), (0xF2, 0xAF)] {
        for edi in [0x3C800, 0x3C001] {
            let code = sample::rep_batches(prefix, opcode, edi);
            for slice in 1..=40 {
                sample::same_with_and_without(&code, slice, engine(), 1)
                    .unwrap_or_else(|e| panic!("{opcode:#x} at {edi:#x}: {e}"));
            }
        }
    }
}

#[wasm_bindgen_test]
fn self_modifying_code_runs_the_new_code_in_the_browser() {
    let cpu = sample::same_with_and_without(sample::SELF_MODIFYING, 1000, engine(), 1)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cpu.regs[wasm86::cpu::ESI], (0..200).sum::<u32>());
}

/// Boot the bundled Linux in deterministic mode until the shell prompt; the serial bytes and
/// the retired-instruction count, and the tier's counters.
fn boot(jit: Option<u32>) -> (Vec<u8>, u64, wasm86::jit::JitStats) {
    let kernel = include_bytes!("../images/bzImage");
    let initrd = include_bytes!("../images/initramfs.cpio.gz");
    let mut m = Machine::new(MachineConfig::default());
    if let Some(threshold) = jit {
        m.cpu.set_jit(Some(engine()), threshold);
    }
    linux::load(&mut m.cpu, kernel, Some(initrd), "console=ttyS0").expect("the kernel loads");
    let mut out = Vec::new();
    while m.cpu.instructions < 2_000_000_000 {
        m.run(5_000_000);
        out.extend(m.serial_output(0));
        if out.windows(4).any(|w| w == b"/ # ") {
            break;
        }
    }
    assert_eq!(m.cpu.jit_error(), None);
    if jit.is_some() {
        // The browser's engine measures its compile time.
        assert!(m.cpu.jit_compile_ms().is_some_and(|ms| ms >= 0.0));
    }
    (out, m.cpu.instructions, m.cpu.jit_stats())
}

/// In deterministic mode a boot prints the same bytes and retires the same instructions with
/// the tier on and off.
#[wasm_bindgen_test]
fn linux_boots_the_same_with_the_compiling_tier_in_the_browser() {
    let (out_plain, n_plain) = {
        let (o, n, _) = boot(None);
        (o, n)
    };
    let (out, n, stats) = boot(Some(DEFAULT_THRESHOLD));
    assert_eq!(n, n_plain, "retired instructions differ");
    assert!(out == out_plain, "serial output differs");
    assert!(stats.compiled_instructions > n / 10, "{stats:?}");
}
