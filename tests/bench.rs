//! The benchmark guest (images/bench-initramfs.cpio.gz) and `wasm86 bench`: behaviour, never
//! timing. The workloads run at their `small` sizes; the guard against a hang is an instruction
//! budget or the CLI's own no-progress check, not a wall-clock limit.
//!
//! Run with `cargo test --release --test bench`.

use std::path::{Path, PathBuf};
use std::process::Command;
use wasm86::boot::linux;
use wasm86::machine::{Machine, MachineConfig, Stop};

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Boot the bench initramfs, type `line` at the prompt and return the serial output from then
/// until `until` appears (or what there is when the budget runs out).
fn run_script(line: &str, until: &str) -> String {
    let kernel = std::fs::read(image("bzImage")).expect("images/bzImage");
    let initrd = std::fs::read(image("bench-initramfs.cpio.gz"))
        .expect("images/bench-initramfs.cpio.gz (images/build.sh bench builds it)");
    let mut m = Machine::new(MachineConfig::default());
    linux::load(&mut m.cpu, &kernel, Some(&initrd), "console=ttyS0").expect("the kernel loads");
    let mut out = Vec::new();
    let mut scanned = 0;
    let mut typed: Vec<u8> = Vec::new();
    let mut at_prompt = None;
    while m.cpu.instructions < 3_000_000_000 {
        let stop = m.run(1_000_000);
        out.extend(m.serial_output(0));
        // Answer the line editor's cursor-position queries as a terminal would.
        while let Some(pos) = find(&out[scanned..], b"\x1b[6n") {
            scanned += pos + 4;
            typed.extend(b"\x1b[1;1R");
        }
        if at_prompt.is_none() && find(&out, b"/ # ").is_some() {
            at_prompt = Some(out.len());
            typed.extend(line.bytes());
            typed.push(b'\n');
        }
        while !typed.is_empty() && m.serial_input(0, typed[0]) {
            typed.remove(0);
        }
        if let Some(from) = at_prompt {
            if find(&out[from..], until.as_bytes()).is_some() {
                break;
            }
        }
        assert!(!matches!(stop, Stop::Reset(_)), "the guest reset");
    }
    let from = at_prompt.unwrap_or_else(|| {
        panic!(
            "no shell prompt; output:\n{}",
            String::from_utf8_lossy(&out)
        )
    });
    String::from_utf8_lossy(&out[from..]).replace('\r', "")
}

#[test]
fn bench_run_brackets_a_checked_workload_with_markers() {
    let out = run_script("/bench/run isprime small", "WASM86-BENCH done");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("WASM86-BENCH"))
        .collect();
    assert_eq!(
        lines,
        [
            "WASM86-BENCH begin isprime",
            "WASM86-BENCH end isprime",
            "WASM86-BENCH done"
        ],
        "output:\n{out}"
    );
}

#[test]
fn bench_run_reports_a_bad_argument_in_the_marker_format() {
    let out = run_script("/bench/run bogus", "(workloads:");
    assert!(
        out.contains("\nWASM86-BENCH error run: unknown argument 'bogus' (workloads:"),
        "output:\n{out}"
    );
}

fn wasm86(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(args)
        .output()
        .expect("wasm86 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wasm86_bench_measures_every_workload_and_records_json() {
    let dir = std::env::temp_dir().join(format!("wasm86-bench-test-{}", std::process::id()));
    let (ok, out, err) = wasm86(&[
        "bench",
        "--small",
        "--reps",
        "2",
        "--out-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "wasm86 bench failed:\n{out}\n{err}");
    for name in ["isprime", "gzip", "forkexec"] {
        assert!(
            out.lines().any(|l| l.starts_with(name)),
            "no {name} row:\n{out}"
        );
    }
    assert!(out.contains("boot to prompt:"), "{out}");
    // The same static i386 programs natively, or a clear word why not.
    assert!(
        out.contains("native run 2/2:") || out.contains("native run: not available"),
        "{out}"
    );
    assert!(
        out.contains("instruction counts identical in all 2 runs"),
        "{out}"
    );

    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("native-") && name.ends_with(".json"),
        "{name}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let workloads = json["workloads"].as_array().unwrap();
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["isprime", "gzip", "forkexec"]);
    for w in workloads {
        let counts = w["instructions"].as_array().unwrap();
        assert_eq!(counts.len(), 2);
        assert!(counts[0].as_u64().unwrap() > 0, "{w}");
        assert_eq!(counts[0], counts[1], "{w}");
    }
    assert_eq!(json["reps"], 2);
    assert_eq!(json["deterministic"], true);
    assert!(json["host_cpu"].is_string());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wasm86_bench_rejects_bad_options_clearly() {
    let (ok, _, err) = wasm86(&["bench", "--reps", "0"]);
    assert!(!ok);
    assert!(err.contains("--reps must be at least 1"), "{err}");

    let (ok, _, err) = wasm86(&["bench", "--limit", "100"]);
    assert!(!ok);
    assert!(err.contains("--synthetic"), "{err}");

    let (ok, _, err) = wasm86(&["bench", "--workloads", "bogus"]);
    assert!(!ok);
    assert!(
        err.contains("possible values: isprime, gzip, forkexec"),
        "{err}"
    );

    // The plain initramfs has no /bench: said before anything runs.
    let plain = image("initramfs.cpio.gz");
    let (ok, _, err) = wasm86(&["bench", "--initrd", plain.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not the benchmark initramfs"), "{err}");
}
