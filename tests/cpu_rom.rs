//! test386.asm, a CPU test ROM written for 386-and-later emulators (see
//! `tests/data/test386/README.md`), run as the machine's BIOS: the CPU starts at its reset
//! vector, and the ROM works through real mode, protected mode, paging, rings, V86 mode and task
//! switches, posting each test's number on port 0x80 and halting on the first failure. Its last
//! test prints the results of arithmetic and logic operations on the debug console, which must
//! match what a real CPU printed.

use std::io::Read;
use std::path::PathBuf;
use wasm86::machine::{BootOrder, Firmware, Machine, MachineConfig};

#[test]
fn test386_passes_every_test_and_prints_what_a_real_cpu_prints() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/test386");
    let rom = std::fs::read(dir.join("test386.bin")).unwrap();
    let firmware = Firmware::new(rom, None, BootOrder::parse("c").unwrap()).unwrap();
    let mut m = Machine::new(MachineConfig {
        firmware: Some(firmware),
        ..MachineConfig::default()
    });
    let mut output = Vec::new();
    // The whole ROM runs about 80 million instructions.
    for _ in 0..400 {
        m.run(1_000_000);
        output.extend(m.debug_output());
        if m.cpu.halted {
            break;
        }
    }
    let post = m.board().post.borrow().last;
    assert!(m.cpu.halted, "the ROM did not finish (POST {post:#04x})");
    assert_eq!(
        post, 0xFF,
        "test {post:#04x} failed at EIP {:#x}",
        m.cpu.eip
    );

    let mut reference = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(dir.join("test386-EE-reference.txt.gz")).unwrap(),
    )
    .read_to_string(&mut reference)
    .unwrap();
    let output = String::from_utf8_lossy(&output);
    let lines = |s: &str| {
        s.lines()
            .map(|l| l.trim_end().to_string())
            .collect::<Vec<_>>()
    };
    let (got, want) = (lines(&output), lines(&reference));
    for (n, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "line {} of POST 0xEE's output", n + 1);
    }
    assert_eq!(
        got.len(),
        want.len(),
        "POST 0xEE's output has another length"
    );
}
