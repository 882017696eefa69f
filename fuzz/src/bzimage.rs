//! bzImage files: the setup header parser and the loader that places a kernel, an initrd and a
//! command line in RAM by what the header says (sizes, addresses and versions all from the
//! file), then a few instructions of the "kernel" so the entry state is a state the CPU runs.
//!
//! Input: RAM size choice, initrd length, command line, then the kernel file. Half the time
//! the harness plants a valid "HdrS" header under the input's fields, so the checks past the
//! signature get exercised.

use super::Input;
use wasm86::boot::linux;
use wasm86::cpu::Cpu;

/// Offsets in the setup header (see Documentation/x86/boot.rst).
const HDR_BOOT_FLAG: usize = 0x1FE;
const HDR_MAGIC: usize = 0x202;
const HDR_VERSION: usize = 0x206;
const HDR_LOADFLAGS: usize = 0x211;
/// Smallest kernel file for which a planted header is whole.
const MIN_PLANTED: usize = 0x268;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let ram = [1usize << 20, 2 << 20, 4 << 20, 16 << 20][usize::from(input.u8() & 3)];
    let plant = input.bool();
    let version = 0x0200 | u16::from(input.u8() & 0x0F);
    let initrd_len = input.length(1 << 16);
    let with_initrd = input.bool();
    let cmdline = input.string(1024);
    let mut kernel = input.take_rest().to_vec();
    if plant {
        if kernel.len() < MIN_PLANTED {
            kernel.resize(MIN_PLANTED, 0);
        }
        kernel[HDR_BOOT_FLAG..HDR_BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
        kernel[HDR_MAGIC..HDR_MAGIC + 4].copy_from_slice(b"HdrS");
        kernel[HDR_VERSION..HDR_VERSION + 2].copy_from_slice(&version.to_le_bytes());
        kernel[HDR_LOADFLAGS] |= 1; // LOADED_HIGH
    }
    let parsed = linux::parse_header(&kernel);
    let mut cpu = Cpu::with_ram(ram);
    let initrd = vec![0x5A; initrd_len];
    let loaded = linux::load(
        &mut cpu,
        &kernel,
        with_initrd.then_some(initrd.as_slice()),
        &cmdline,
    );
    // The loader parses the same header: it refuses exactly the files the parser refuses.
    assert_eq!(
        parsed.is_err(),
        loaded.is_err() && matches!(parsed, Err(ref e) if loaded.as_ref().err() == Some(e)),
        "parse_header and load disagree: {parsed:?} / {loaded:?}"
    );
    if let Ok(info) = loaded {
        if let Some((addr, size)) = info.initrd {
            assert!(
                u64::from(addr) + u64::from(size) <= ram as u64,
                "the initrd fits in RAM"
            );
        }
        cpu.run(1000);
    }
}
