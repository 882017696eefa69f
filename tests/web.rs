//! Browser tests of the wasm-bindgen API (`src/web`), run in headless Chromium by
//! `wasm-pack test --headless --chrome` (`make test-web`). Native `cargo test` skips this file.
#![cfg(target_arch = "wasm32")]

use wasm86::web::WasmCpu;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Where the test programs are loaded and started: 0000:7C00, as a boot sector would be.
const ORIGIN: u32 = 0x7C00;

/// A 64 KiB machine with `code` at 0000:7C00, ready to run. The IVT limit is 0: there are no
/// interrupt handlers, so any exception ends the run with a triple fault instead of looping
/// through an empty vector table.
fn cpu_with(code: &[u8]) -> WasmCpu {
    let mut cpu = WasmCpu::new(64 * 1024);
    cpu.load(ORIGIN, code);
    cpu.set_real_mode_entry(0, ORIGIN as u16);
    cpu.set_real_mode_segment(2, 0); // SS = 0
    cpu.set_reg(4, 0x7000); // SP below the program
    cpu.set_idtr(0, 0);
    cpu
}

#[wasm_bindgen_test]
fn new_cpu_has_the_ram_it_was_given() {
    let cpu = WasmCpu::new(1 << 20);
    assert_eq!(cpu.ram_size(), 1 << 20);
    assert_eq!(cpu.instructions(), 0.0);
    assert!(!cpu.halted());
    assert!(!cpu.shutdown());
}

#[wasm_bindgen_test]
fn load_puts_bytes_in_ram() {
    let mut cpu = WasmCpu::new(64 * 1024);
    cpu.load(0x1234, &[0xB8, 0x34, 0x12]);
    assert_eq!(cpu.read_byte(0x1233), 0);
    assert_eq!(cpu.read_byte(0x1234), 0xB8);
    assert_eq!(cpu.read_byte(0x1236), 0x12);
    assert_eq!(cpu.read_byte(0x10_0000), 0xFF, "past the end of RAM");
}

#[wasm_bindgen_test]
fn registers_and_entry_point_can_be_set() {
    let mut cpu = cpu_with(&[]);
    assert_eq!(cpu.seg(1), 0, "CS");
    assert_eq!(cpu.eip(), ORIGIN);
    cpu.set_reg(3, 0xDEAD_BEEF);
    assert_eq!(cpu.reg(3), 0xDEAD_BEEF);
    assert_eq!(cpu.reg(9), 0, "out-of-range register reads 0");
}

#[wasm_bindgen_test]
fn undefined_opcode_without_handlers_shuts_down() {
    // UD2 raises #UD; with no IVT its delivery fails (#GP, then #DF): a triple fault.
    let mut cpu = cpu_with(&[0x0F, 0x0B]);
    assert_eq!(cpu.run(100), "shutdown");
    assert!(cpu.shutdown());
    assert_eq!(cpu.exit_reason(), "shutdown");
}

#[wasm_bindgen_test]
fn mov_ax_imm16_then_hlt() {
    // mov ax, 0x1234 ; hlt
    let mut cpu = cpu_with(&[0xB8, 0x34, 0x12, 0xF4]);
    let exit = cpu.run(100);
    assert_eq!(cpu.reg(0) & 0xFFFF, 0x1234, "AX (run ended: {exit})");
    assert_eq!(exit, "halted");
    assert!(cpu.halted());
    assert!(cpu.instructions() >= 1.0);
}

#[wasm_bindgen_test]
fn counted_loop_retires_every_instruction() {
    // mov cx, 1000 ; l: inc ax ; loop l ; hlt
    let mut cpu = cpu_with(&[0xB9, 0xE8, 0x03, 0x40, 0xE2, 0xFD, 0xF4]);
    let exit = cpu.run(1_000_000);
    assert_eq!(exit, "halted");
    assert_eq!(cpu.reg(0) & 0xFFFF, 1000, "AX");
    assert_eq!(cpu.reg(1) & 0xFFFF, 0, "CX");
    // MOV + 1000 x (INC + LOOP), plus HLT if HLT counts as retired.
    let n = cpu.instructions();
    assert!(n == 2001.0 || n == 2002.0, "retired {n}");
}
