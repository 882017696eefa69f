//! Every input that once crashed a fuzz target (fuzz/, `make fuzz`), replayed through the
//! same harness code the target runs: `tests/data/fuzz/TARGET/NAME` is an input of TARGET,
//! named for the bug it found. A harness panics where the fuzzer saw a crash, so each of these
//! tests fails while its bug is back. (Hangs and memory blow-ups show up here as a test that
//! takes long or aborts.)
// Native only (the harnesses use the native compiling-tier engine); wasm-pack test builds
// every test for wasm32.
#![cfg(not(target_arch = "wasm32"))]

// The harnesses live in the fuzz crate, which the main crate cannot depend on (it depends on
// this one, with coverage instrumentation); including its source keeps one copy of them.
#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

/// A harness: runs one input.
type Harness = fn(&[u8]);

/// Run every saved input of `target` through `run`; returns how many there were.
fn replay(target: &str, run: Harness) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in &paths {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{target}: {}", path.display());
        run(&data);
    }
    paths.len()
}

#[test]
fn http_range_inputs_that_crashed() {
    assert!(replay("http_range", harness::http_range::run) >= 1);
}

/// Every harness finishes on the inputs every fuzzing run starts from (the empty input and a
/// short one of each mode byte), so a harness the fuzzer would choke on at once fails here.
#[test]
fn every_harness_runs_its_starting_inputs() {
    let targets: [(&str, Harness); 8] = [
        ("cpu", harness::cpu::run),
        ("devices", harness::devices::run),
        ("bzimage", harness::bzimage::run),
        ("disk_images", harness::disk_images::run),
        ("http_range", harness::http_range::run),
        ("snapshot", harness::snapshot::run),
        ("replay", harness::replay::run),
        ("page_inputs", harness::page_inputs::run),
    ];
    for (name, run) in targets {
        eprintln!("{name}");
        run(&[]);
        for mode in 0..8u8 {
            run(&[mode, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        }
    }
}
