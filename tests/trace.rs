//! `wasm86 trace` as a user runs it: the instructions from power-on of a BIOS boot and of the
//! bundled kernel's direct boot, a trace that starts later (`--from`, `--until`), and the
//! errors: a bad option, a missing kernel, a text that never appears before `--timeout`.

use std::process::Command;

/// `wasm86 trace` with `args`: (exit code, stdout lines, stderr).
fn trace(args: &[&str]) -> (Option<i32>, Vec<String>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .arg("trace")
        .args(args)
        .output()
        .expect("wasm86 runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A trace line's columns: retired count, CS:EIP, linear address, then bytes and disassembly.
fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn a_bios_boot_starts_with_the_far_jump_at_the_reset_vector() {
    let (code, lines, err) = trace(&["--boot", "c", "--count", "20", "--timeout", "120"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(lines.len(), 20, "{lines:#?}");
    assert_eq!(
        columns(&lines[0]),
        vec![
            "0",
            "f000:fff0",
            "fffffff0",
            "ea",
            "5b",
            "e0",
            "00",
            "f0",
            "jmp",
            "0xf000:0xe05b"
        ],
        "SeaBIOS's reset vector: {}",
        lines[0]
    );
    assert_eq!(&columns(&lines[1])[..3], ["1", "f000:e05b", "000fe05b"]);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(
            columns(line)[0],
            n.to_string(),
            "one retired count per line"
        );
    }
    // From a later instruction: the same lines from there on.
    let (code, later, err) = trace(&["--boot", "c", "--from", "7", "--count", "3"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(later, lines[7..10].to_vec());
}

#[test]
fn the_direct_linux_boot_starts_at_the_kernel_s_32_bit_entry() {
    let (code, lines, err) = trace(&["--count", "20", "--registers", "--timeout", "120"]);
    assert_eq!(code, Some(0), "{err}");
    // Instruction lines (--registers adds indented ones after them).
    let traced: Vec<&String> = lines
        .iter()
        .filter(|l| columns(l)[0].parse::<u64>().is_ok())
        .collect();
    assert_eq!(traced.len(), 20, "{lines:#?}");
    // The boot protocol's 32-bit entry: code32_start (1 MiB) in the loader's flat CS 0x10.
    assert_eq!(
        &columns(traced[0])[..3],
        ["0", "0010:00100000", "00100000"],
        "{}",
        traced[0]
    );
    assert!(
        lines.iter().any(|l| l.trim_start().starts_with("ESP=")),
        "--registers shows what changed:\n{}",
        lines.join("\n")
    );
    // Far in: the trace starts at exactly that instruction.
    let (code, later, err) = trace(&["--from", "2000000", "--count", "3"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(later.len(), 3, "{later:#?}");
    assert_eq!(columns(&later[0])[0], "2000000");
    assert_eq!(columns(&later[2])[0], "2000002");
}

#[test]
fn until_starts_right_after_the_instruction_that_completed_the_text() {
    let (code, lines, err) = trace(&[
        "--until",
        "Linux version",
        "--count",
        "2",
        "--timeout",
        "300",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let start: u64 = columns(&lines[0])[0].parse().unwrap();
    assert!(start > 1_000_000, "{}", lines[0]);
    // The instruction before it wrote the text's last letter to the UART.
    let from = (start - 1).to_string();
    let (code, before, err) = trace(&["--from", &from, "--count", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        columns(&before[0]).ends_with(&["out", "dx,al"]),
        "{}",
        before[0]
    );
}

#[test]
fn errors_are_clear_and_exit_non_zero() {
    let (code, lines, err) = trace(&["--count", "many"]);
    assert_eq!(code, Some(1));
    assert!(lines.is_empty());
    assert!(
        err.contains("invalid value 'many' for '--count <M>'"),
        "{err}"
    );

    let (code, _, err) = trace(&["--kernel", "/nonexistent/bzImage"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("kernel /nonexistent/bzImage:"), "{err}");

    let (code, _, err) = trace(&["--from", "5", "--until", "x"]);
    assert_eq!(code, Some(1), "{err}");

    let (code, _, err) = trace(&["--realtime"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--realtime"), "{err}");

    // The bundled Linux boots and waits at its shell: the text never comes.
    let (code, lines, err) = trace(&["--until", "never printed", "--timeout", "1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(lines.is_empty());
    assert!(err.contains("timeout after 1.0 s"), "{err}");
}
