//! `make bench-web`: wasm86's own page (its interpreter alone, and with its compiling tier) and
//! v86 (its interpreter and its JIT) side by side in one headless Chromium, booting the same
//! kernel, initrd and command line, running the benchmark guest's workloads, interleaved run by
//! run (wasm86, wasm86-native, wasm86-jit, v86-interp, v86-jit, wasm86, ...). wasm86 is the page
//! with `&jit=0` (its interpreter alone; the compiling tier is on by default) and wasm86-jit the
//! very same page with `&jit=1` (hot guest code compiled to WebAssembly at run time, at the
//! page's default threshold). wasm86-native is the same core built natively:
//! `wasm86 bench --reps 1 --no-native` as a child process (no browser) on the same kernel, initrd,
//! command line and RAM, with its own deterministic instruction counts, so that the browser build
//! can be set against it on the same workloads. It runs right after wasm86's page: the two are
//! the pair the 1.3x target compares, and the host's speed drifts (by up to 1.5x over tens of
//! seconds), so run back to back a drift falls on both alike instead of on one of them.
//!
//! Everything timed is timed in the page: `bench/recorder.js` timestamps serial output with
//! `performance.now()` as it arrives (wasm86 and wasm86-jit: `window.wasm86`'s "serial" event,
//! which also carries the guest's retired-instruction count; v86: its `serial0-output-byte`
//! listener) and types the benchmark command at the shell prompt. WebDriver only starts each run,
//! waits for the guest's `WASM86-BENCH done` (polling once a second) and collects the record at
//! the end, with `window.wasm86.stats()` for the wasm86 pages (wasm86-jit's tells how much of the
//! guest ran in compiled code; a tier that stayed off or turned itself off there, or that was on
//! in wasm86, is a warning).
//!
//! Guest instructions per workload are counted for the pages by wasm86's page (the count at the
//! end marker minus the count at the begin marker, each known to within one run slice of the
//! worker; wasm86-jit's page counts the same way, and its median is shown as a cross-check); the
//! median over wasm86's runs is divided by each page's wall time to give MIPS, so that the pages'
//! MIPS are the same work over different times. wasm86-native divides its own exact counts by
//! its own wall times.
//!
//! The summary gives, from the medians, wasm86 against v86-interp, v86-jit and wasm86-native,
//! and wasm86-jit against v86-jit (the target: boot faster, and at least v86-jit's MIPS on
//! isprime and gzip) and against wasm86 (what the compiling tier adds to the interpreter). The
//! browser build's target (at most 1.3x slower than native) is judged on paired ratios instead:
//! per repetition wasm86's page MIPS over wasm86-native's MIPS of the same repetition, and the
//! median of those over the repetitions (the ratio of medians beside it), so that a drift between
//! repetitions cancels out of each pair rather than landing in one median and not the other.
//!
//! Usage: `bench_web --root target/bench-site [--reps N] [--timeout SECONDS] [--out DIR]
//! [--stand-in] [--command CMD] [--native-wasm86 PATH] [--no-native]` (CMD instead of
//! `/bench/run`, e.g. `/bench/run small`; PATH the native binary, default `WASM86_BIN` or
//! target/release/wasm86; `--no-native` skips wasm86-native, whatever PATH says). The root is
//! site/ plus `bench/` (v86.html, recorder.js, v86/, firmware/) and, when it exists,
//! `images/bench-initramfs.cpio.gz`; without that file a stand-in command (busy shell loops
//! between the same markers) runs on the bundled initramfs, and wasm86-native is skipped (it
//! runs only the benchmark guest's `/bench/run`).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasm86_webdriver::{js, tail, wasm86_bin, ChromeDriver, Client, Res, Server};

/// The benchmark guest's initrd, relative to the root.
const BENCH_INITRD: &str = "images/bench-initramfs.cpio.gz";
/// The bundled initrd the stand-in runs on.
const BUNDLED_INITRD: &str = "images/initramfs.cpio.gz";
const KERNEL: &str = "images/bzImage";
/// wasm86's default command line (www/wasm86.js), given to both systems.
const APPEND: &str = "console=ttyS0 console=tty0 nomodeset";
/// Guest RAM for both systems. Not wasm86's default 64 MiB: v86 0.5.462 loads an initrd at
/// the 64 MiB mark, so with 64 MiB of RAM its bzImage loader fails ("offset is out of bounds").
const MEMORY_MIB: u32 = 128;
/// What the benchmark guest runs at its prompt.
const BENCH_COMMAND: &str = "/bench/run";
/// The stand-in: the same markers around busy shell loops and a fork/exec loop. `m` prints the
/// markers so that the echoed command line never holds a marker line itself.
const STAND_IN_COMMAND: &str = "m() { echo WASM86-BENCH $*; }; \
     w() { i=0; while [ $i -lt $1 ]; do i=$((i+1)); done; }; \
     m begin isprime; w 4000; m end isprime; \
     m begin gzip; w 4000; m end gzip; \
     m begin forkexec; for j in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; \
     do /bin/busybox true; done; m end forkexec; m done";
/// How often a run's progress is looked at (not used for any timing).
const POLL: Duration = Duration::from_secs(1);
/// How often the native child is looked at (its own timings are its own).
const NATIVE_POLL: Duration = Duration::from_millis(100);
/// The workloads of `/bench/run`, in the order it runs them when none is named (and the only
/// order `wasm86 bench` runs them in).
const BENCH_WORKLOADS: [&str; 3] = ["isprime", "gzip", "forkexec"];
/// The issue's target: the browser build at most this many times slower than native.
const NATIVE_TARGET: f64 = 1.3;
/// The compiling tier's target: wasm86-jit at least this many times v86-jit's MIPS on
/// [`JIT_TARGET_WORKLOADS`] (and booting faster than v86-jit).
const JIT_TARGET_MIPS: f64 = 1.0;
/// The workloads the compiling tier's MIPS target is about.
const JIT_TARGET_WORKLOADS: [&str; 2] = ["isprime", "gzip"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    /// wasm86's page: the interpreter alone.
    Wasm86,
    /// wasm86's page with `&jit=1`: the interpreter and the compiling tier.
    Wasm86Jit,
    V86Interp,
    V86Jit,
    /// `wasm86 bench`: the same core built natively, a child process.
    Wasm86Native,
}

/// The systems that run in the browser, in the order each repetition runs them.
const SYSTEMS: [System; 4] = [
    System::Wasm86,
    System::Wasm86Jit,
    System::V86Interp,
    System::V86Jit,
];

/// The pairs of systems set against each other (the first over the second, ratios of
/// medians), in the order of the ratio table's columns; a pair with a system that did not run
/// (wasm86-native without a native binary) is left out.
const RATIOS: [(System, System); 5] = [
    (System::Wasm86, System::V86Interp),
    (System::Wasm86, System::V86Jit),
    (System::Wasm86Jit, System::V86Jit),
    (System::Wasm86Jit, System::Wasm86),
    (System::Wasm86, System::Wasm86Native),
];

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Wasm86 => "wasm86",
            System::Wasm86Jit => "wasm86-jit",
            System::V86Interp => "v86-interp",
            System::V86Jit => "v86-jit",
            System::Wasm86Native => "wasm86-native",
        }
    }

    /// wasm86's own page (with or without the compiling tier): the recorder is attached to
    /// `window.wasm86`, and the page counts the guest's instructions.
    fn is_wasm86_page(self) -> bool {
        matches!(self, System::Wasm86 | System::Wasm86Jit)
    }
}

/// The systems one repetition runs, in order: the pages, with wasm86-native right after
/// wasm86's page if it runs. The two are the pair the 1.3x target compares: back to back, a
/// drift of the host's speed falls on both alike (three pages between them took ~40 s, enough
/// for the ratio to swing from 1.1x to 1.8x between invocations). This is also the order of the
/// summary's systems (the table's columns, `summary.systems` in the JSON).
fn systems(native: bool) -> Vec<System> {
    let mut v = SYSTEMS.to_vec();
    if native {
        let after_wasm86 = v
            .iter()
            .position(|&s| s == System::Wasm86)
            .map_or(0, |i| i + 1);
        v.insert(after_wasm86, System::Wasm86Native);
    }
    v
}

struct Config {
    root: PathBuf,
    reps: usize,
    timeout: Duration,
    out: PathBuf,
    stand_in: bool,
    /// `--command`: what to type instead of `/bench/run` (e.g. `/bench/run small`).
    command: Option<String>,
    /// wasm86-native: the native binary and the `wasm86 bench` flags that run the same
    /// workloads and sizes as the command; `None` with `--no-native` or for the stand-in.
    native: Option<Native>,
    /// Why wasm86-native does not run, when it does not.
    native_skipped: Option<String>,
}

/// How wasm86-native runs.
struct Native {
    bin: PathBuf,
    /// `--workloads`/`--small` from the benchmark command ([`bench_flags`]).
    flags: Vec<String>,
}

impl Config {
    fn from_args() -> Res<Config> {
        let mut cfg = Config {
            root: PathBuf::from("target/bench-site"),
            reps: 3,
            timeout: Duration::from_secs(300),
            out: PathBuf::from("target/bench"),
            stand_in: false,
            command: None,
            native: None,
            native_skipped: None,
        };
        let mut native_bin: Option<PathBuf> = None;
        let mut no_native = false;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match a.as_str() {
                "--root" => cfg.root = PathBuf::from(value("--root")?),
                "--out" => cfg.out = PathBuf::from(value("--out")?),
                "--reps" => {
                    cfg.reps = value("--reps")?
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .ok_or("--reps needs a whole number above 0")?
                }
                "--timeout" => {
                    let s: u64 = value("--timeout")?
                        .parse()
                        .map_err(|_| "--timeout needs whole seconds")?;
                    cfg.timeout = Duration::from_secs(s);
                }
                "--stand-in" => cfg.stand_in = true,
                "--command" => cfg.command = Some(value("--command")?),
                "--native-wasm86" => native_bin = Some(PathBuf::from(value("--native-wasm86")?)),
                "--no-native" => no_native = true,
                "-h" | "--help" => {
                    println!(
                        "bench_web --root DIR [--reps N] [--timeout SECONDS] [--out DIR] [--stand-in] \
                         [--command CMD] [--native-wasm86 PATH] [--no-native]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (see --help)")),
            }
        }
        for f in [
            "index.html",
            KERNEL,
            BUNDLED_INITRD,
            "bench/v86.html",
            "bench/recorder.js",
            "bench/v86/libv86.mjs",
            "bench/v86/v86.wasm",
            "bench/firmware/bios.bin",
            "bench/firmware/vgabios.bin",
        ] {
            if !cfg.root.join(f).is_file() {
                return Err(format!(
                    "{} is missing: assemble the benchmark root with `make bench-web` \
                     (scripts/bench-web-site.sh)",
                    cfg.root.join(f).display()
                ));
            }
        }
        if !cfg.root.join(BENCH_INITRD).is_file() {
            cfg.stand_in = true;
        }
        // --no-native wins over --native-wasm86 (which `make bench-web` always passes).
        if no_native {
            cfg.native_skipped = Some("--no-native".into());
        } else if cfg.stand_in {
            cfg.native_skipped = Some(
                "the stand-in has no native counterpart (wasm86 bench runs only the benchmark \
                 guest's /bench/run)"
                    .into(),
            );
        } else {
            let flags = bench_flags(cfg.command()).map_err(|e| {
                format!(
                    "--command {:?} cannot be given to `wasm86 bench` for the wasm86-native \
                     column: {e}; use `/bench/run [isprime] [gzip] [forkexec] [small|full]` \
                     (workloads in that order), or pass --no-native",
                    cfg.command()
                )
            })?;
            let bin = match native_bin {
                Some(b) if b.is_file() => b,
                Some(b) => {
                    return Err(format!(
                        "--native-wasm86 {}: no such file (build it with `make build`, or pass \
                         --no-native)",
                        b.display()
                    ))
                }
                None => wasm86_bin()
                    .map_err(|e| format!("{e}; or pass --native-wasm86 PATH, or --no-native"))?,
            };
            cfg.native = Some(Native { bin, flags });
        }
        Ok(cfg)
    }

    fn initrd(&self) -> &'static str {
        if self.stand_in {
            BUNDLED_INITRD
        } else {
            BENCH_INITRD
        }
    }

    fn command(&self) -> &str {
        if let Some(c) = &self.command {
            c
        } else if self.stand_in {
            STAND_IN_COMMAND
        } else {
            BENCH_COMMAND
        }
    }

    /// The page a run of `sys` loads, relative to the root.
    fn page(&self, sys: System) -> String {
        match sys {
            System::Wasm86 | System::Wasm86Jit => {
                let page = format!(
                    "index.html?initrd={}&append={}&memory={}",
                    enc(self.initrd()),
                    enc(APPEND),
                    MEMORY_MIB
                );
                // The very same page, with the compiling tier off (the interpreter alone; it is
                // on by default) or on at its default threshold.
                if sys == System::Wasm86Jit {
                    page + "&jit=1"
                } else {
                    page + "&jit=0"
                }
            }
            System::V86Interp | System::V86Jit => format!(
                "bench/v86.html?jit={}&kernel=../{}&initrd=../{}&append={}&memory={}&command={}",
                u8::from(sys == System::V86Jit),
                enc(KERNEL),
                enc(self.initrd()),
                enc(APPEND),
                MEMORY_MIB,
                enc(self.command())
            ),
            System::Wasm86Native => unreachable!("wasm86-native runs without a page"),
        }
    }
}

/// Percent-encode a query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `wasm86 bench` flags that run what `command` runs in the guest: the command must be
/// `/bench/run` followed by workloads (in `/bench/run`'s own order, each once: `wasm86 bench`
/// runs them in that order whatever the order given) and a size (`small` or `full`, the last one
/// counts, as in the script).
fn bench_flags(command: &str) -> Res<Vec<String>> {
    let mut words = command.split_whitespace();
    if words.next() != Some(BENCH_COMMAND) {
        return Err(format!("it does not start with {BENCH_COMMAND}"));
    }
    let mut workloads: Vec<&str> = Vec::new();
    let mut small = false;
    for w in words {
        match w {
            "small" => small = true,
            "full" => small = false,
            _ if BENCH_WORKLOADS.contains(&w) => {
                if workloads.contains(&w) {
                    return Err(format!("it names {w} twice"));
                }
                workloads.push(w);
            }
            _ => {
                return Err(format!(
                    "{w:?} is neither a workload ({}) nor a size (small, full)",
                    BENCH_WORKLOADS.join(", ")
                ))
            }
        }
    }
    let in_order: Vec<&str> = BENCH_WORKLOADS
        .into_iter()
        .filter(|w| workloads.contains(w))
        .collect();
    if workloads != in_order {
        return Err(format!(
            "it runs {} in that order, and wasm86 bench runs {} (the guest's order)",
            workloads.join(", "),
            in_order.join(", ")
        ));
    }
    let mut flags = Vec::new();
    if !workloads.is_empty() && workloads.len() < BENCH_WORKLOADS.len() {
        flags.push("--workloads".to_string());
        flags.push(workloads.join(","));
    }
    if small {
        flags.push("--small".to_string());
    }
    Ok(flags)
}

/// One workload of one run.
#[derive(Clone, Debug)]
struct Workload {
    name: String,
    ms: f64,
    /// wasm86's page (wasm86, wasm86-jit) and wasm86-native only: instructions between the
    /// markers (end-of-slice counts), and the bounds the slices give: at least `min`, at most
    /// `max` (wasm86-native: its exact count, three times).
    instructions: Option<(f64, f64, f64)>,
}

/// One run: a page load (or the native child), boot, and the workloads.
#[derive(Debug)]
struct Run {
    system: System,
    rep: usize,
    boot_s: f64,
    /// wasm86-native only: instructions from power-on to the prompt.
    boot_instructions: Option<f64>,
    workloads: Vec<Workload>,
    /// The page's record, or the JSON `wasm86 bench` wrote.
    record: Value,
    /// wasm86-native only: the command line that ran it.
    command: Option<Vec<String>>,
    /// wasm86's page (wasm86, wasm86-jit) only: `window.wasm86.stats()` once the guest was
    /// done; its `jit` is the compiling tier's counters, null while the tier is off.
    stats: Option<Value>,
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// Turn the page's record into a run: pair each begin with its end.
fn analyse(system: System, rep: usize, record: Value) -> Res<Run> {
    let who = format!("{} run {}", system.name(), rep + 1);
    let prompt = record
        .get("prompt")
        .filter(|p| !p.is_null())
        .ok_or_else(|| format!("{who}: no shell prompt in the record"))?;
    let boot_s = num(prompt, "t").ok_or_else(|| format!("{who}: prompt without a time"))? / 1000.0;
    let markers = record
        .get("markers")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{who}: no markers in the record"))?;
    let mut workloads = Vec::new();
    let mut open: Option<&Value> = None;
    for m in markers {
        let kind = m.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = m.get("name").and_then(Value::as_str).unwrap_or("");
        match kind {
            "begin" => {
                if let Some(o) = open {
                    return Err(format!("{who}: begin {name} while {o} is still open"));
                }
                open = Some(m);
            }
            "end" => {
                let b = open
                    .take()
                    .ok_or_else(|| format!("{who}: end {name} without a begin"))?;
                if b.get("name").and_then(Value::as_str) != Some(name) {
                    return Err(format!("{who}: end {name} after {b}"));
                }
                let t =
                    |v: &Value| num(v, "t").ok_or_else(|| format!("{who}: marker {v} has no time"));
                let ms = t(m)? - t(b)?;
                let instructions = match (
                    num(b, "instructions"),
                    num(b, "instructionsBefore"),
                    num(m, "instructions"),
                    num(m, "instructionsBefore"),
                ) {
                    (Some(b1), Some(b0), Some(e1), Some(e0)) => Some((e1 - b1, e0 - b1, e1 - b0)),
                    _ => None,
                };
                // Both wasm86 pages count: the same page, the same counter.
                if system.is_wasm86_page() && instructions.is_none() {
                    return Err(format!(
                        "{who}: the {} page's serial event carried no instruction counts",
                        system.name()
                    ));
                }
                workloads.push(Workload {
                    name: name.to_string(),
                    ms,
                    instructions,
                });
            }
            _ => {}
        }
    }
    if workloads.is_empty() {
        return Err(format!("{who}: no complete workload in {markers:?}"));
    }
    Ok(Run {
        system,
        rep,
        boot_s,
        boot_instructions: None,
        workloads,
        record,
        command: None,
        stats: None,
    })
}

/// A number, or the first element of an array of numbers (`wasm86 bench` keeps one per
/// repetition; wasm86-native runs one).
fn first_num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Array(a) => a.first().and_then(Value::as_f64),
        n => n.as_f64(),
    }
}

/// Turn the JSON record `wasm86 bench --reps 1` wrote into a run (its own instruction counts:
/// deterministic, exact).
fn analyse_native(rep: usize, record: Value) -> Res<Run> {
    let who = format!("{} run {}", System::Wasm86Native.name(), rep + 1);
    let boot = record
        .get("boot")
        .ok_or_else(|| format!("{who}: no \"boot\" in wasm86 bench's JSON"))?;
    let boot_s = first_num(boot.get("wall_s"))
        .ok_or_else(|| format!("{who}: no number in boot.wall_s of wasm86 bench's JSON"))?;
    let boot_instructions = first_num(boot.get("instructions"))
        .ok_or_else(|| format!("{who}: no number in boot.instructions of wasm86 bench's JSON"))?;
    let list = record
        .get("workloads")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{who}: no \"workloads\" list in wasm86 bench's JSON"))?;
    let mut workloads = Vec::new();
    for (i, w) in list.iter().enumerate() {
        let name = w
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{who}: workloads[{i}] of wasm86 bench's JSON has no name"))?;
        let field = |k: &str| {
            first_num(w.get(k)).ok_or_else(|| {
                format!("{who}: workload {name} of wasm86 bench's JSON has no number in {k}")
            })
        };
        let wall_s = field("wall_s")?;
        let c = field("instructions")?;
        if wall_s <= 0.0 || c <= 0.0 {
            return Err(format!(
                "{who}: workload {name} took {wall_s} s for {c} instructions in wasm86 bench's JSON"
            ));
        }
        workloads.push(Workload {
            name: name.to_string(),
            ms: wall_s * 1000.0,
            instructions: Some((c, c, c)),
        });
    }
    if workloads.is_empty() {
        return Err(format!("{who}: no workload in wasm86 bench's JSON"));
    }
    Ok(Run {
        system: System::Wasm86Native,
        rep,
        boot_s,
        boot_instructions: Some(boot_instructions),
        workloads,
        record,
        command: None,
        stats: None,
    })
}

/// The command line of one wasm86-native run, writing its JSON into `out_dir`.
fn native_command(cfg: &Config, native: &Native, out_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        native.bin.display().to_string(),
        "bench".into(),
        "--reps".into(),
        "1".into(),
        "--no-native".into(),
        "--append".into(),
        APPEND.into(),
        "--memory".into(),
        MEMORY_MIB.to_string(),
        // The very files the pages boot.
        "--kernel".into(),
        cfg.root.join(KERNEL).display().to_string(),
        "--initrd".into(),
        cfg.root.join(cfg.initrd()).display().to_string(),
        "--out-dir".into(),
        out_dir.display().to_string(),
    ];
    args.extend(native.flags.iter().cloned());
    args
}

/// A command line for a message, each argument quoted where a shell would need it.
fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One run of wasm86-native: `wasm86 bench --reps 1 --no-native ...` as a child process, its
/// JSON record read back from a scratch directory (removed afterwards, kept on failure).
async fn run_native(cfg: &Config, native: &Native, rep: usize) -> Res<Run> {
    let who = format!("{} run {}", System::Wasm86Native.name(), rep + 1);
    let dir = std::env::temp_dir().join(format!(
        "wasm86-bench-web-{}-native-{}",
        std::process::id(),
        rep + 1
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{who}: {}: {e}", dir.display()))?;
    let args = native_command(cfg, native, &dir);
    let line = shell_line(&args);
    let log_path = dir.join("output.txt");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("{who}: {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("{who}: {}: {e}", log_path.display()))?;
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("{who}: cannot start {}: {e}", native.bin.display()))?;
    let output = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        format!(
            "\n  its output ({}) ended with:\n{}",
            log_path.display(),
            tail(&text, 2048)
        )
    };
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("{who}: waiting for `{line}` failed: {e}")),
        }
        if t0.elapsed() > cfg.timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{who}: timed out after {} s: `{line}`{}",
                cfg.timeout.as_secs(),
                output()
            ));
        }
        tokio::time::sleep(NATIVE_POLL).await;
    };
    if !status.success() {
        return Err(format!("{who}: `{line}` failed ({status}){}", output()));
    }
    let json_path = std::fs::read_dir(&dir)
        .map_err(|e| format!("{who}: {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("native-") && n.ends_with(".json"))
        })
        .ok_or_else(|| {
            format!(
                "{who}: `{line}` succeeded but wrote no native-*.json into {}{}",
                dir.display(),
                output()
            )
        })?;
    let text = std::fs::read_to_string(&json_path)
        .map_err(|e| format!("{who}: {}: {e}", json_path.display()))?;
    let record: Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{who}: {} (written by `{line}`) is not valid JSON: {e}",
            json_path.display()
        )
    })?;
    let mut run = analyse_native(rep, record).map_err(|e| {
        format!(
            "{e}\n  the JSON: {}\n  written by `{line}`",
            json_path.display()
        )
    })?;
    run.command = Some(args);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(run)
}

/// What a run is waiting for, from the page's progress, for a timeout message.
fn stage(p: &Value, command: &str) -> String {
    if p.is_null() {
        return "the benchmark recorder to start in the page (the page did not load?)".into();
    }
    if p.get("prompt").is_none_or(Value::is_null) {
        return "the shell prompt `/ # ` (booting)".into();
    }
    match p.get("last").filter(|l| !l.is_null()) {
        None => format!("the first WASM86-BENCH marker after typing `{command}`"),
        Some(l) => {
            let kind = l.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = l.get("name").and_then(Value::as_str).unwrap_or("");
            if kind == "begin" {
                format!("`WASM86-BENCH end {name}` (workload {name} running)")
            } else {
                format!("the next workload's begin or `WASM86-BENCH done` (after {kind} {name})")
            }
        }
    }
}

const PROGRESS_JS: &str = "const r = window.__bench;\n\
     const m = window.wasm86;\n\
     if (!r) return null;\n\
     return { prompt: r.prompt, done: r.done, error: r.error,\n\
              markers: r.markers.length,\n\
              last: r.markers.length ? r.markers[r.markers.length - 1] : null,\n\
              lastLines: r.lastLines.slice(-8),\n\
              machineError: m ? m.error() : null };";

const RECORD_JS: &str = "const r = window.__bench;\n\
     if (!r) return null;\n\
     const { feed, ...plain } = r;\n\
     return plain;";

/// wasm86's page's stats (instructions, mips, downloadedBytes, state, jit).
const STATS_JS: &str = "const m = window.wasm86;\n\
     return m ? m.stats() : null;";

const ATTACH_JS: &str = "const [url, command, done] = arguments;\n\
     import(url).then(\n\
       (mod) => { try { mod.attachWasm86(command); done(null); }\n\
                  catch (e) { done(String(e && e.message || e)); } },\n\
       (e) => done('cannot import ' + url + ': ' + e));";

/// Open a fresh tab (closing the old one) and load `url` in it.
async fn fresh_tab(client: &Client, url: &str) -> Res<()> {
    let tab = client
        .new_window(true)
        .await
        .map_err(|e| format!("cannot open a tab: {e}"))?;
    client
        .close_window()
        .await
        .map_err(|e| format!("cannot close the previous tab: {e}"))?;
    client
        .switch_to_window(tab.handle)
        .await
        .map_err(|e| format!("cannot switch to the new tab: {e}"))?;
    client
        .goto(url)
        .await
        .map_err(|e| format!("loading {url} failed: {e}"))
}

/// One run of `sys`: a fresh tab, the page, and its record once the guest is done.
async fn run_one(client: &Client, base: &str, cfg: &Config, sys: System, rep: usize) -> Res<Run> {
    let who = format!("{} run {}", sys.name(), rep + 1);
    let url = format!("{base}{}", cfg.page(sys));
    let t0 = Instant::now();
    fresh_tab(client, &url)
        .await
        .map_err(|e| format!("{who}: {e}"))?;
    if sys.is_wasm86_page() {
        let v = client
            .execute_async(
                ATTACH_JS,
                vec![
                    json!(format!("{base}bench/recorder.js")),
                    json!(cfg.command()),
                ],
            )
            .await
            .map_err(|e| format!("{who}: attaching the recorder failed: {e}"))?;
        if let Some(e) = v.as_str() {
            return Err(format!("{who}: attaching the recorder failed: {e}"));
        }
    }
    loop {
        let p = js(client, PROGRESS_JS, vec![])
            .await
            .map_err(|e| format!("{who}: {e}"))?;
        let lines = || {
            p.get("lastLines")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n    ")
                })
                .unwrap_or_default()
        };
        if let Some(e) = p.get("machineError").and_then(Value::as_str) {
            return Err(format!(
                "{who}: the machine failed: {e}\n  last lines:\n    {}",
                lines()
            ));
        }
        if let Some(e) = p.get("error").and_then(Value::as_str) {
            return Err(format!(
                "{who}: the guest reported a failure: {e}\n  last lines:\n    {}",
                lines()
            ));
        }
        if p.get("done").and_then(Value::as_bool) == Some(true) {
            break;
        }
        if t0.elapsed() > cfg.timeout {
            return Err(format!(
                "{who}: timed out after {} s waiting for {}\n  page: {url}\n  last lines:\n    {}",
                cfg.timeout.as_secs(),
                stage(&p, cfg.command()),
                lines()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    let record = js(client, RECORD_JS, vec![])
        .await
        .map_err(|e| format!("{who}: {e}"))?;
    let stats = if sys.is_wasm86_page() {
        Some(
            js(client, STATS_JS, vec![])
                .await
                .map_err(|e| format!("{who}: reading window.wasm86.stats() failed: {e}"))?,
        )
    } else {
        None
    };
    let mut run = analyse(sys, rep, record)?;
    run.stats = stats;
    Ok(run)
}

/// What is wrong with a wasm86 page run's compiling tier, from the page's stats: in wasm86-jit
/// it stayed off (then the run measured the interpreter alone), it turned itself off, or
/// modules failed; in wasm86 it was on (then the run did not measure the interpreter alone).
/// `None` when nothing is, and for the other systems.
fn jit_problem(run: &Run) -> Option<String> {
    let who = format!("{} run {}", run.system.name(), run.rep + 1);
    let jit = run
        .stats
        .as_ref()
        .and_then(|s| s.get("jit"))
        .filter(|j| j.is_object());
    match run.system {
        System::Wasm86Jit => {}
        System::Wasm86 if jit.is_some() => {
            return Some(format!(
                "{who}: the compiling tier was on without jit=1 (the page's default?), so it \
                 did not measure the interpreter alone"
            ))
        }
        _ => return None,
    }
    let Some(jit) = jit else {
        return Some(format!(
            "{who}: the compiling tier was off (window.wasm86.stats().jit is null: this site's \
             build or this browser has none?), so it measured the interpreter alone"
        ));
    };
    let mut problems = Vec::new();
    if let Some(e) = jit.get("error").and_then(Value::as_str) {
        problems.push(format!("the compiling tier turned itself off: {e}"));
    }
    match num(jit, "failures") {
        Some(f) if f > 0.0 => problems.push(format!("{f} compiling-tier failure(s)")),
        _ => {}
    }
    if num(jit, "regionsCompiled") == Some(0.0) {
        problems.push("the compiling tier compiled nothing".into());
    }
    (!problems.is_empty()).then(|| format!("{who}: {}", problems.join("; ")))
}

/// For the line per run: what the compiling tier did in a wasm86-jit run (regions compiled, the
/// share of the guest's instructions retired in compiled code, the time spent compiling per KB
/// of guest code), or `None`.
fn jit_note(run: &Run) -> Option<String> {
    if run.system != System::Wasm86Jit {
        return None;
    }
    let stats = run.stats.as_ref()?;
    let jit = stats.get("jit").filter(|j| j.is_object())?;
    let mut note = format!(
        "jit: {} regions compiled",
        num(jit, "regionsCompiled").unwrap_or(f64::NAN)
    );
    if let (Some(c), Some(all)) = (num(jit, "compiledInstructions"), num(stats, "instructions")) {
        if all > 0.0 {
            note.push_str(&format!(
                ", {:.1}% of instructions in compiled code",
                100.0 * c / all
            ));
        }
    }
    if let (Some(ms), Some(bytes)) = (num(jit, "compileMs"), num(jit, "guestBytes")) {
        if bytes > 0.0 {
            note.push_str(&format!(
                ", {ms:.0} ms compiling {:.1} KB of guest code ({:.1} ms per KB)",
                bytes / 1024.0,
                ms / (bytes / 1024.0)
            ));
        }
    }
    Some(note)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// "12.3 (11.9–12.8)" with `prec` decimals.
fn cell(v: &[f64], prec: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let (lo, hi) = min_max(v);
    if v.len() == 1 {
        return format!("{:.prec$}", v[0]);
    }
    format!("{:.prec$} ({lo:.prec$}–{hi:.prec$})", median(v))
}

fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Results by system, workload: the summary the table and the JSON share.
struct Summary {
    workloads: Vec<String>,
    /// The systems measured, in the order of `boot` and `mips`.
    systems: Vec<System>,
    /// Median instruction count per workload (wasm86's page runs): the count every page's MIPS
    /// are computed from.
    instructions: Vec<f64>,
    /// The same from wasm86-jit's runs (the same page's counter, with the compiling tier), a
    /// cross-check; `None` without wasm86-jit runs.
    instructions_jit: Option<Vec<f64>>,
    /// wasm86-native's own instruction count per workload (median; deterministic, so all equal).
    native_instructions: Option<Vec<f64>>,
    /// [system][run] the repetition (from 0) of each run, for pairing runs of one repetition.
    reps: Vec<Vec<usize>>,
    /// [system][run] boot seconds.
    boot: Vec<Vec<f64>>,
    /// [system][workload][run] MIPS.
    mips: Vec<Vec<Vec<f64>>>,
    /// What went wrong with the wasm86 pages' compiling tier, a line per run ([`jit_problem`]).
    jit_problems: Vec<String>,
}

/// One system against another, from the medians: the boot time ratio, and the MIPS ratio per
/// workload.
type Ratio = (f64, Vec<f64>);

/// wasm86-jit against its target, from the medians.
#[derive(Debug, PartialEq)]
struct JitVerdict {
    /// Boot time ratio wasm86-jit / v86-jit, and whether it is below 1 (wasm86-jit boots faster).
    boot: (f64, bool),
    /// Per workload: the MIPS ratio wasm86-jit / v86-jit and, for [`JIT_TARGET_WORKLOADS`],
    /// whether it is at least [`JIT_TARGET_MIPS`].
    mips: Vec<(String, f64, Option<bool>)>,
}

impl JitVerdict {
    /// Every target met.
    fn met(&self) -> bool {
        self.boot.1 && self.mips.iter().all(|(_, _, m)| *m != Some(false))
    }
}

/// One system against another, run by run: each ratio sets a run of one system against the run
/// of the other in the same repetition, so that a drift of the host's speed between repetitions
/// (the runs of a repetition are close in time) cancels out of each ratio instead of landing in
/// one system's median and not the other's.
#[derive(Debug, PartialEq)]
struct Paired {
    /// [repetition] the boot time ratio a / b; `None` where either system has no run in that
    /// repetition (a run that failed).
    boot: Vec<Option<f64>>,
    /// [workload][repetition] the MIPS ratio a / b; `None` where either system has no run in
    /// that repetition, or the ratio is no finite positive number (a workload timed at zero).
    mips: Vec<Vec<Option<f64>>>,
}

/// The median of the repetitions that paired; `None` if none did.
fn paired_median(per_repetition: &[Option<f64>]) -> Option<f64> {
    let paired: Vec<f64> = per_repetition.iter().flatten().copied().collect();
    (!paired.is_empty()).then(|| median(&paired))
}

/// One workload of the browser build against native and the target.
#[derive(Debug, PartialEq)]
struct NativeWorkload {
    name: String,
    /// How many times slower the browser build is: 1 / the median over the repetitions of
    /// wasm86's page MIPS / wasm86-native's MIPS in that repetition; `None` if no repetition ran
    /// both.
    slowdown: Option<f64>,
    /// Whether `slowdown` is at most [`NATIVE_TARGET`]: the target's judgement (`None` without
    /// a paired repetition).
    met: Option<bool>,
    /// How many repetitions paired, of how many.
    paired: (usize, usize),
    /// 1 / the ratio of medians, shown beside the paired slowdown.
    slowdown_of_medians: f64,
}

/// The browser build (wasm86's page, the interpreter alone) against wasm86-native and the 1.3x
/// target, judged on the paired ratios ([`Paired`]).
#[derive(Debug, PartialEq)]
struct NativeVerdict {
    /// Boot time ratio page / native: the paired median (`None` if no repetition ran both) and
    /// the ratio of medians. No target: the pages' boot includes loading the page, native's not.
    boot: (Option<f64>, f64),
    workloads: Vec<NativeWorkload>,
}

impl Summary {
    fn index(&self, sys: System) -> Option<usize> {
        self.systems.iter().position(|&s| s == sys)
    }

    /// `a` against `b`, from the medians: boot time ratio (a / b; below 1 `a` boots faster) and
    /// per workload the MIPS ratio (a / b; above 1 `a` is faster). `None` if either did not
    /// run.
    fn ratio(&self, a: System, b: System) -> Option<Ratio> {
        let (a, b) = (self.index(a)?, self.index(b)?);
        if self.boot[a].is_empty() || self.boot[b].is_empty() {
            return None;
        }
        let boot = median(&self.boot[a]) / median(&self.boot[b]);
        let mips = (0..self.workloads.len())
            .map(|i| median(&self.mips[a][i]) / median(&self.mips[b][i]))
            .collect();
        Some((boot, mips))
    }

    /// Browser vs native, from the medians: boot time ratio (wasm86 page / native) and per
    /// workload the MIPS ratio (wasm86 page / native; below 1 the browser build is slower).
    fn vs_native(&self) -> Option<Ratio> {
        self.ratio(System::Wasm86, System::Wasm86Native)
    }

    /// How many repetitions the runs come from (the highest repetition that ran, plus one).
    fn repetitions(&self) -> usize {
        self.reps.iter().flatten().max().map_or(0, |&r| r + 1)
    }

    /// `a` against `b`, run by run: per repetition where both ran, the boot time ratio (a / b)
    /// and per workload the MIPS ratio (a / b). `None` if either did not run at all.
    fn paired(&self, a: System, b: System) -> Option<Paired> {
        let (a, b) = (self.index(a)?, self.index(b)?);
        if self.boot[a].is_empty() || self.boot[b].is_empty() {
            return None;
        }
        // Per repetition, the position of each system's run among its runs (each system runs
        // once a repetition), or `None` where one of them has no run: it failed.
        let run_in = |sys: usize, rep: usize| self.reps[sys].iter().position(|&r| r == rep);
        let pairs: Vec<Option<(usize, usize)>> = (0..self.repetitions())
            .map(|rep| Some((run_in(a, rep)?, run_in(b, rep)?)))
            .collect();
        let ratio = |x: f64, y: f64| Some(x / y).filter(|r| r.is_finite() && *r > 0.0);
        let boot = pairs
            .iter()
            .map(|p| p.and_then(|(i, j)| ratio(self.boot[a][i], self.boot[b][j])))
            .collect();
        let mips = (0..self.workloads.len())
            .map(|w| {
                pairs
                    .iter()
                    .map(|p| p.and_then(|(i, j)| ratio(self.mips[a][w][i], self.mips[b][w][j])))
                    .collect()
            })
            .collect();
        Some(Paired { boot, mips })
    }

    /// Browser vs native, run by run ([`Summary::paired`]): wasm86's page over wasm86-native.
    fn vs_native_paired(&self) -> Option<Paired> {
        self.paired(System::Wasm86, System::Wasm86Native)
    }

    /// The browser build against native and the target (at most [`NATIVE_TARGET`] times
    /// slower), judged on the median of the paired ratios, with the ratio of medians beside it.
    fn native_verdict(&self) -> Option<NativeVerdict> {
        let (boot, mips) = self.vs_native()?;
        let paired = self.vs_native_paired()?;
        let repetitions = paired.boot.len();
        Some(NativeVerdict {
            boot: (paired_median(&paired.boot), boot),
            workloads: self
                .workloads
                .iter()
                .zip(&paired.mips)
                .zip(mips)
                .map(|((name, per_repetition), of_medians)| {
                    let slowdown = paired_median(per_repetition).map(|r| 1.0 / r);
                    NativeWorkload {
                        name: name.clone(),
                        slowdown,
                        met: slowdown.map(|f| f <= NATIVE_TARGET),
                        paired: (per_repetition.iter().flatten().count(), repetitions),
                        slowdown_of_medians: 1.0 / of_medians,
                    }
                })
                .collect(),
        })
    }

    /// The pairs of [`RATIOS`] whose systems both ran, with their ratios.
    fn ratios(&self) -> Vec<((System, System), Ratio)> {
        RATIOS
            .iter()
            .filter_map(|&(a, b)| Some(((a, b), self.ratio(a, b)?)))
            .collect()
    }

    /// wasm86-jit against v86-jit and the target: boot faster, at least [`JIT_TARGET_MIPS`]
    /// times the MIPS on [`JIT_TARGET_WORKLOADS`].
    fn jit_verdict(&self) -> Option<JitVerdict> {
        let (boot, mips) = self.ratio(System::Wasm86Jit, System::V86Jit)?;
        Some(JitVerdict {
            boot: (boot, boot < 1.0),
            mips: self
                .workloads
                .iter()
                .zip(mips)
                .map(|(w, r)| {
                    let target = JIT_TARGET_WORKLOADS.contains(&w.as_str());
                    (w.clone(), r, target.then_some(r >= JIT_TARGET_MIPS))
                })
                .collect(),
        })
    }
}

fn summarise(runs: &[Run]) -> Res<Summary> {
    let first = runs.first().ok_or("no runs")?;
    let workloads: Vec<String> = first.workloads.iter().map(|w| w.name.clone()).collect();
    for r in runs {
        let names: Vec<&str> = r.workloads.iter().map(|w| w.name.as_str()).collect();
        if names != workloads.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(format!(
                "{} run {} ran the workloads {names:?}, {} run {} {workloads:?}",
                r.system.name(),
                r.rep + 1,
                first.system.name(),
                first.rep + 1
            ));
        }
    }
    // The runs of one system, in the order they ran.
    let runs_of = |sys: System| runs.iter().filter(move |r| r.system == sys);
    let count_median = |sys: System| -> Vec<f64> {
        (0..workloads.len())
            .map(|i| {
                let counts: Vec<f64> = runs_of(sys)
                    .filter_map(|r| r.workloads[i].instructions.map(|c| c.0))
                    .collect();
                median(&counts)
            })
            .collect()
    };
    let instructions = count_median(System::Wasm86);
    let ran = |sys: System| runs.iter().any(|r| r.system == sys);
    let instructions_jit = ran(System::Wasm86Jit).then(|| count_median(System::Wasm86Jit));
    let has_native = ran(System::Wasm86Native);
    let native_instructions = has_native.then(|| count_median(System::Wasm86Native));
    let systems = systems(has_native);
    let reps = systems
        .iter()
        .map(|&s| runs_of(s).map(|r| r.rep).collect())
        .collect();
    let boot = systems
        .iter()
        .map(|&s| runs_of(s).map(|r| r.boot_s).collect())
        .collect();
    let mips = systems
        .iter()
        .map(|&s| {
            (0..workloads.len())
                .map(|i| {
                    runs_of(s)
                        .map(|r| {
                            // The pages (wasm86-jit too): wasm86's page count, so that their
                            // MIPS are the same work over their times (v86 counts nothing);
                            // native: its own exact count.
                            let c = match (s, r.workloads[i].instructions) {
                                (System::Wasm86Native, Some((c, _, _))) => c,
                                _ => instructions[i],
                            };
                            c / (r.workloads[i].ms / 1000.0) / 1e6
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    Ok(Summary {
        workloads,
        systems,
        instructions,
        instructions_jit,
        native_instructions,
        reps,
        boot,
        mips,
        jit_problems: runs.iter().filter_map(jit_problem).collect(),
    })
}

/// "1.25x slower" / "1.10x faster" from how many times longer the browser build takes.
fn slower(factor: f64) -> String {
    if factor >= 1.0 {
        format!("{factor:.2}x slower")
    } else {
        format!("{:.2}x faster", 1.0 / factor)
    }
}

/// Print rows as a table: the first column left-aligned, the others right-aligned.
fn print_rows(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cellv) in r.iter().enumerate() {
            let pad = widths[c] - cellv.chars().count();
            if c == 0 {
                line.push_str(cellv);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cellv);
            }
        }
        println!("{}", line.trim_end());
    }
}

/// A ratio table's column name: "wasm86-jit/v86-jit", "wasm86/native".
fn ratio_name(a: System, b: System) -> String {
    let short = |s: System| {
        if s == System::Wasm86Native {
            "native"
        } else {
            s.name()
        }
    };
    format!("{}/{}", short(a), short(b))
}

/// The browser build against native in words, or `None` if wasm86-native did not run: the
/// verdict line (the 1.3x target judged on the median of the paired ratios, the ratio of medians
/// beside it) and a line with each repetition's paired slowdown (how much the host drifted shows
/// in how little they vary).
fn native_lines(s: &Summary) -> Option<[String; 2]> {
    let verdict = s.native_verdict()?;
    let paired = s.vs_native_paired()?;
    let judged: Vec<String> = verdict
        .workloads
        .iter()
        .map(|w| {
            let of_medians = format!("ratio of medians {:.2}x", w.slowdown_of_medians);
            match (w.slowdown, w.met) {
                (Some(f), Some(met)) => {
                    let met = if met { "met" } else { "NOT met" };
                    let (n, of) = w.paired;
                    let skipped = if n < of {
                        format!("; {n} of {of} repetitions")
                    } else {
                        String::new()
                    };
                    format!("{} {} ({met}{skipped}; {of_medians})", w.name, slower(f))
                }
                _ => format!(
                    "{} not judged: no repetition ran both ({of_medians})",
                    w.name
                ),
            }
        })
        .collect();
    let (boot_paired, boot_of_medians) = verdict.boot;
    let boot = match boot_paired {
        Some(t) => format!(
            "boot {} (ratio of medians {boot_of_medians:.2}x)",
            slower(t)
        ),
        None => format!("boot: no repetition ran both (ratio of medians {boot_of_medians:.2}x)"),
    };
    let verdict_line = format!(
        "browser build vs native (target: at most {NATIVE_TARGET}x slower; paired per \
         repetition, median): {}; {boot}",
        judged.join(", ")
    );
    // Each repetition's ratio as a slowdown, "-" where a run of the pair failed.
    let slowdowns = |per_repetition: &[Option<f64>], invert: bool| -> String {
        per_repetition
            .iter()
            .map(|r| match r {
                Some(r) => format!("{:.2}x", if invert { 1.0 / r } else { *r }),
                None => "-".to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut each: Vec<String> = s
        .workloads
        .iter()
        .zip(&paired.mips)
        .map(|(w, per_repetition)| format!("{w} {}", slowdowns(per_repetition, true)))
        .collect();
    each.push(format!("boot {}", slowdowns(&paired.boot, false)));
    let per_repetition_line = format!(
        "browser build vs native per repetition (how many times slower, repetition 1 to {}; \
         - where a run of the pair failed): {}",
        paired.boot.len(),
        each.join("; ")
    );
    Some([verdict_line, per_repetition_line])
}

/// The systems table (medians and ranges), the ratios table (ratios of medians), then the
/// instruction counts and the targets in words.
fn print_table(s: &Summary) {
    let mut header: Vec<String> = vec![String::new()];
    header.extend(s.systems.iter().map(|sys| sys.name().to_string()));
    let mut rows: Vec<Vec<String>> = vec![header];
    let mut boot_row: Vec<String> = vec!["boot to prompt (s)".to_string()];
    boot_row.extend(s.boot.iter().map(|v| cell(v, 1)));
    rows.push(boot_row);
    for (i, w) in s.workloads.iter().enumerate() {
        let mut row = vec![format!("{w} (MIPS)")];
        row.extend(s.mips.iter().map(|per| cell(&per[i], 1)));
        rows.push(row);
    }
    print_rows(&rows);
    println!("medians (min–max) over the runs");
    println!();

    // Native columns also say it in words: "0.80 (1.25x slower)".
    let ratios = s.ratios();
    let mut header: Vec<String> = vec!["ratios of medians".to_string()];
    header.extend(ratios.iter().map(|&((a, b), _)| ratio_name(a, b)));
    let mut rows: Vec<Vec<String>> = vec![header];
    let mut boot_row: Vec<String> = vec!["boot to prompt (time)".to_string()];
    boot_row.extend(ratios.iter().map(|&((_, b), (t, _))| {
        if b == System::Wasm86Native {
            format!("{t:.2} ({})", slower(t))
        } else {
            format!("{t:.2}")
        }
    }));
    rows.push(boot_row);
    for (i, w) in s.workloads.iter().enumerate() {
        let mut row = vec![format!("{w} (MIPS)")];
        row.extend(ratios.iter().map(|((_, b), (_, m))| {
            if *b == System::Wasm86Native {
                format!("{:.2} ({})", m[i], slower(1.0 / m[i]))
            } else {
                format!("{:.2}", m[i])
            }
        }));
        rows.push(row);
    }
    print_rows(&rows);
    println!("ratios A/B of medians (boot: time, A faster below 1; MIPS: A faster above 1)");
    let counts = |c: &[f64]| -> String {
        s.workloads
            .iter()
            .zip(c)
            .map(|(w, c)| format!("{w} {:.1} M", c / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "guest instructions per workload (wasm86's page counter, median; every page's MIPS): {}",
        counts(&s.instructions)
    );
    if let Some(jit) = &s.instructions_jit {
        let parts: Vec<String> = s
            .workloads
            .iter()
            .zip(jit.iter().zip(&s.instructions))
            .map(|(w, (&j, &i))| format!("{w} {:.1} M ({:+.1}%)", j / 1e6, 100.0 * (j - i) / i))
            .collect();
        println!(
            "wasm86-jit's page counter (median, a cross-check against wasm86's): {}",
            parts.join(", ")
        );
    }
    if let Some(native) = &s.native_instructions {
        println!(
            "wasm86-native: `wasm86 bench` (the same core built natively, deterministic mode), \
             MIPS from its own counts: {}; its boot is power-on to prompt, the pages' from \
             navigation start (page load and downloads included)",
            counts(native)
        );
    }
    for line in native_lines(s).into_iter().flatten() {
        println!("{line}");
    }
    let met = |m: bool| if m { "met" } else { "NOT met" };
    if let Some(v) = s.jit_verdict() {
        let mut parts = vec![format!(
            "boot {:.2}x the time ({})",
            v.boot.0,
            met(v.boot.1)
        )];
        parts.extend(v.mips.iter().map(|(w, r, target)| match target {
            Some(m) => format!("{w} {r:.2}x the MIPS ({})", met(*m)),
            None => format!("{w} {r:.2}x the MIPS"),
        }));
        println!(
            "wasm86-jit vs v86-jit (target: boot faster, at least {JIT_TARGET_MIPS:.1}x the MIPS \
             on {}): {}; {}",
            JIT_TARGET_WORKLOADS.join(" and "),
            parts.join(", "),
            if v.met() { "all met" } else { "NOT all met" }
        );
    }
    if let Some((boot, mips)) = s.ratio(System::Wasm86Jit, System::Wasm86) {
        let mut parts = vec![format!("boot {boot:.2}x the time")];
        parts.extend(
            s.workloads
                .iter()
                .zip(&mips)
                .map(|(w, r)| format!("{w} {r:.2}x the MIPS")),
        );
        println!(
            "wasm86-jit vs wasm86 (the interpreter alone): {}",
            parts.join(", ")
        );
    }
    for p in &s.jit_problems {
        println!("WARNING: {p}");
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn iso_date(unix: u64) -> String {
    let (y, mo, d) = civil((unix / 86_400) as i64);
    let s = unix % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn run_json(r: &Run) -> Value {
    let mut o = json!({
        "system": r.system.name(),
        "rep": r.rep + 1,
        "boot_s": r.boot_s,
        "workloads": r.workloads.iter().map(|w| {
            let mut o = json!({ "name": w.name, "ms": w.ms });
            if let Some((c, lo, hi)) = w.instructions {
                o["instructions"] = json!(c);
                o["instructions_min"] = json!(lo);
                o["instructions_max"] = json!(hi);
            }
            o
        }).collect::<Vec<_>>(),
        "record": r.record,
    });
    if let Some(c) = r.boot_instructions {
        o["boot_instructions"] = json!(c);
    }
    if let Some(cmd) = &r.command {
        o["command"] = json!(cmd);
        o["command_line"] = json!(shell_line(cmd));
    }
    if let Some(stats) = &r.stats {
        o["page_stats"] = stats.clone();
    }
    if let Some(p) = jit_problem(r) {
        o["jit_problem"] = json!(p);
    }
    o
}

/// How the runs were ordered, for the JSON and the log.
fn order(native: bool) -> String {
    let names: Vec<&str> = systems(native).iter().map(|s| s.name()).collect();
    if native {
        format!(
            "interleaved: {} per repetition, a fresh tab per page run, an empty tab while \
             wasm86-native (a child process) runs, right after wasm86's page so that the pair \
             the 1.3x target compares runs back to back",
            names.join(", ")
        )
    } else {
        format!(
            "interleaved: {} per repetition, a fresh tab per run",
            names.join(", ")
        )
    }
}

/// The JSON's `browser_vs_native`: the ratios of medians (`boot_time_ratio`, `mips_ratio`,
/// `slowdown`), the paired ratios they are judged on (`paired`: the medians over the
/// repetitions, and each repetition's ratio, null where a run of the pair failed) and the
/// judgement per workload (`met`, null where no repetition paired). Null without wasm86-native.
fn browser_vs_native_json(summary: &Summary) -> Value {
    let (Some((boot, mips)), Some(paired), Some(verdict)) = (
        summary.vs_native(),
        summary.vs_native_paired(),
        summary.native_verdict(),
    ) else {
        return Value::Null;
    };
    let by_workload = |values: Vec<Value>| -> Value {
        Value::Object(summary.workloads.iter().cloned().zip(values).collect())
    };
    let paired_medians: Vec<Option<f64>> = paired.mips.iter().map(|r| paired_median(r)).collect();
    json!({
        "boot_time_ratio": boot,
        "mips_ratio": by_workload(mips.iter().map(|&r| json!(r)).collect()),
        "slowdown": by_workload(mips.iter().map(|&r| json!(1.0 / r)).collect()),
        "target_slowdown_max": NATIVE_TARGET,
        "paired": {
            "what": "per repetition wasm86's page MIPS / wasm86-native's MIPS of the same \
                     repetition (run back to back), and the median over the repetitions; \
                     null where a run of the pair failed",
            "mips_ratio": by_workload(paired_medians.iter().map(|&r| json!(r)).collect()),
            "slowdown": by_workload(
                paired_medians.iter().map(|r| json!(r.map(|r| 1.0 / r))).collect()
            ),
            "per_repetition": by_workload(paired.mips.iter().map(|r| json!(r)).collect()),
            "boot_time_ratio": paired_median(&paired.boot),
            "boot_time_per_repetition": paired.boot,
        },
        "met": by_workload(verdict.workloads.iter().map(|w| json!(w.met)).collect()),
        "met_judged_on": "paired.slowdown at most target_slowdown_max",
    })
}

/// The JSON's `summary`: per system its boot seconds and MIPS per workload (each run, and the
/// median), the instruction counts, and the ratios of medians (every pair of [`RATIOS`] that
/// ran, wasm86 against native, wasm86-jit against v86-jit and its target, wasm86-jit against
/// wasm86); wasm86 against native also run by run ([`browser_vs_native_json`]).
fn summary_json(summary: &Summary) -> Value {
    json!({
        "workloads": summary.workloads,
        "instructions_median": summary.instructions,
        "instructions_median_jit": summary.instructions_jit,
        "instructions_native": summary.native_instructions,
        "browser_vs_native": browser_vs_native_json(summary),
        "ratios": summary.ratios().iter().map(|((a, b), (boot, mips))| json!({
            "name": ratio_name(*a, *b),
            "of": a.name(),
            "over": b.name(),
            "boot_time_ratio": boot,
            "mips_ratio": summary.workloads.iter().cloned().zip(mips.iter().map(|&r| json!(r)))
                .collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "jit_vs_v86_jit": summary.jit_verdict().map(|v| json!({
            "boot_time_ratio": v.boot.0,
            "boot_met": v.boot.1,
            "mips_ratio": v.mips.iter().map(|(w, r, _)| (w.clone(), json!(r)))
                .collect::<serde_json::Map<_, _>>(),
            "mips_met": v.mips.iter().filter_map(|(w, _, m)| Some((w.clone(), json!((*m)?))))
                .collect::<serde_json::Map<_, _>>(),
            "target_mips_ratio_min": JIT_TARGET_MIPS,
            "target_workloads": JIT_TARGET_WORKLOADS,
            "all_met": v.met(),
        })),
        "jit_vs_interpreter": summary.ratio(System::Wasm86Jit, System::Wasm86)
            .map(|(boot, mips)| json!({
                "boot_time_ratio": boot,
                "mips_ratio": summary.workloads.iter().cloned()
                    .zip(mips.iter().map(|&r| json!(r)))
                    .collect::<serde_json::Map<_, _>>(),
            })),
        "jit_problems": summary.jit_problems,
        "systems": summary.systems.iter().enumerate().map(|(i, s)| json!({
            "system": s.name(),
            "boot_s": summary.boot[i],
            "boot_s_median": median(&summary.boot[i]),
            "mips": summary.workloads.iter().enumerate()
                .map(|(w, name)| (name.clone(), json!(summary.mips[i][w])))
                .collect::<serde_json::Map<_, _>>(),
            "mips_median": summary.workloads.iter().enumerate()
                .map(|(w, name)| (name.clone(), json!(median(&summary.mips[i][w]))))
                .collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}

async fn bench(client: &Client, base: &str, cfg: &Config) -> Res<(Vec<Run>, Value)> {
    let browser_version = client
        .capabilities()
        .and_then(|c| c.get("browserVersion"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    println!(
        "bench-web: Chromium {browser_version}, host CPU {}, {} repetition(s), guest {} ({}), \
         timeout {} s per run",
        host_cpu(),
        cfg.reps,
        cfg.initrd(),
        if cfg.stand_in {
            "STAND-IN: busy shell loops, not the benchmark guest"
        } else {
            "the benchmark guest"
        },
        cfg.timeout.as_secs()
    );
    println!(
        "bench-web: wasm86-jit: wasm86's page with &jit=1 (its compiling tier, default \
         threshold)"
    );
    match (&cfg.native, &cfg.native_skipped) {
        (Some(n), _) => println!(
            "bench-web: wasm86-native: {} (right after wasm86's page in each repetition, with an \
             empty tab: the pair the 1.3x target compares, back to back)",
            shell_line(&native_command(cfg, n, Path::new("<temp dir>")))
        ),
        (None, Some(why)) => println!("bench-web: wasm86-native skipped: {why}"),
        (None, None) => {}
    }
    println!("bench-web: {}", order(cfg.native.is_some()));
    let mut runs = Vec::new();
    for rep in 0..cfg.reps {
        for sys in systems(cfg.native.is_some()) {
            let run = match &cfg.native {
                Some(native) if sys == System::Wasm86Native => {
                    // The page before (wasm86's) would go on running its machine beside the
                    // native one; the next page opens a fresh tab as always.
                    client
                        .goto("about:blank")
                        .await
                        .map_err(|e| format!("cannot empty the tab before wasm86-native: {e}"))?;
                    run_native(cfg, native, rep).await?
                }
                _ => run_one(client, base, cfg, sys, rep).await?,
            };
            let parts: Vec<String> = run
                .workloads
                .iter()
                .map(|w| match w.instructions {
                    Some((c, _, _)) => {
                        format!("{} {:.2} s ({:.1} M instr)", w.name, w.ms / 1000.0, c / 1e6)
                    }
                    None => format!("{} {:.2} s", w.name, w.ms / 1000.0),
                })
                .collect();
            let jit = jit_note(&run).map(|n| format!("; {n}")).unwrap_or_default();
            println!(
                "  {:<13} run {}: prompt after {:.1} s; {}{jit}",
                sys.name(),
                rep + 1,
                run.boot_s,
                parts.join(", ")
            );
            if let Some(p) = jit_problem(&run) {
                println!("  WARNING: {p}");
            }
            runs.push(run);
        }
    }
    let user_agent = js(client, "return navigator.userAgent;", vec![])
        .await
        .unwrap_or(Value::Null);
    let meta = json!({
        "chromium_version": browser_version,
        "chromium_version_cli": command_output("chromium", &["--version"]),
        "user_agent": user_agent,
    });
    Ok((runs, meta))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("bench-web: error: {e}");
        std::process::exit(1);
    }
}

async fn real_main() -> Res<()> {
    let cfg = Config::from_args()?;
    let server = Server::start_at(&cfg.root)?;
    let driver = ChromeDriver::start()?;
    let client = driver.connect().await?;
    // The server directly, not the test harness's recording relay: downloads count in the boot.
    let base = server.direct_url.clone();
    let result = bench(&client, &base, &cfg).await;
    let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
    drop(driver);
    let (runs, meta) = result.map_err(|e| {
        format!(
            "{e}\n  wasm86 serve stderr: {:?}",
            tail(&server.stderr(), 1024)
        )
    })?;
    drop(server);

    let summary = summarise(&runs)?;
    println!();
    print_table(&summary);

    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = json!({
        "date": iso_date(unix),
        "unix_time": unix,
        "host_cpu": host_cpu(),
        "host_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "browser": meta,
        "v86_version": "0.5.462",
        "reps": cfg.reps,
        "order": order(cfg.native.is_some()),
        "jit": {
            "system": System::Wasm86Jit.name(),
            "page": cfg.page(System::Wasm86Jit),
            "threshold": "the page's default",
            "instructions": "wasm86's page counter, as for wasm86; every page's MIPS from \
                             wasm86's median (summary.instructions_median)",
        },
        "native": match &cfg.native {
            Some(n) => json!({
                "system": System::Wasm86Native.name(),
                "binary": n.bin.display().to_string(),
                "bench_flags": n.flags,
                "command": shell_line(&native_command(&cfg, n, Path::new("<temp dir>"))),
                "instructions": "its own (deterministic mode), not the page's",
            }),
            None => json!({ "skipped": cfg.native_skipped }),
        },
        "guest": {
            "kernel": KERNEL,
            "initrd": cfg.initrd(),
            "stand_in": cfg.stand_in,
            "append": APPEND,
            "memory_mib": MEMORY_MIB,
            "command": cfg.command(),
        },
        "summary": summary_json(&summary),
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all(&cfg.out).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    let path = cfg.out.join(format!("web-{unix}.json"));
    let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("raw numbers: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_encoding() {
        assert_eq!(iso_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_date(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(enc("console=ttyS0 a/b"), "console%3DttyS0%20a/b");
    }

    fn config(stand_in: bool) -> Config {
        Config {
            root: PathBuf::from("root"),
            reps: 1,
            timeout: Duration::from_secs(30),
            out: PathBuf::from("out"),
            stand_in,
            command: None,
            native: None,
            native_skipped: None,
        }
    }

    #[test]
    fn systems_and_their_pages() {
        // wasm86-native runs right after wasm86 (the pair the 1.3x target compares, back to
        // back), then wasm86-jit and v86.
        let names = |native| -> Vec<&str> { systems(native).iter().map(|s| s.name()).collect() };
        assert_eq!(
            names(false),
            ["wasm86", "wasm86-jit", "v86-interp", "v86-jit"]
        );
        assert_eq!(
            names(true),
            [
                "wasm86",
                "wasm86-native",
                "wasm86-jit",
                "v86-interp",
                "v86-jit"
            ]
        );
        assert!(order(true).starts_with(
            "interleaved: wasm86, wasm86-native, wasm86-jit, v86-interp, v86-jit per repetition"
        ));
        assert!(order(true).contains("right after wasm86's page"));
        assert!(order(false)
            .starts_with("interleaved: wasm86, wasm86-jit, v86-interp, v86-jit per repetition"));
        assert!(System::Wasm86.is_wasm86_page() && System::Wasm86Jit.is_wasm86_page());
        assert!(!System::V86Jit.is_wasm86_page() && !System::Wasm86Native.is_wasm86_page());
        for stand_in in [false, true] {
            let cfg = config(stand_in);
            // The very same page, the compiling tier off (the interpreter alone) and on (at its
            // default threshold).
            let page = cfg.page(System::Wasm86);
            let base = page.strip_suffix("&jit=0").expect("the interpreter alone");
            assert_eq!(cfg.page(System::Wasm86Jit), format!("{base}&jit=1"));
            assert!(page.starts_with("index.html?initrd=images/"), "{page}");
            assert!(base.ends_with("&memory=128"), "{page}");
            assert!(!cfg.page(System::Wasm86Jit).contains("threshold"));
            assert!(cfg
                .page(System::V86Interp)
                .starts_with("bench/v86.html?jit=0&"));
            assert!(cfg
                .page(System::V86Jit)
                .starts_with("bench/v86.html?jit=1&"));
        }
        assert!(config(true).page(System::Wasm86).contains(BUNDLED_INITRD));
        assert!(config(false).page(System::Wasm86Jit).contains(BENCH_INITRD));
        assert_eq!(
            RATIOS.map(|(a, b)| ratio_name(a, b)),
            [
                "wasm86/v86-interp",
                "wasm86/v86-jit",
                "wasm86-jit/v86-jit",
                "wasm86-jit/wasm86",
                "wasm86/native"
            ]
        );
    }

    #[test]
    fn markers_pair_into_workloads() {
        let rec = json!({
            "prompt": { "t": 2500.0 },
            "markers": [
                { "kind": "begin", "name": "a", "t": 3000.0, "instructions": 100.0, "instructionsBefore": 90.0 },
                { "kind": "end", "name": "a", "t": 4000.0, "instructions": 1100.0, "instructionsBefore": 1050.0 },
                { "kind": "done", "name": "", "t": 4001.0 },
            ],
        });
        let r = analyse(System::Wasm86, 0, rec).unwrap();
        assert_eq!(r.boot_s, 2.5);
        assert_eq!(r.workloads.len(), 1);
        assert_eq!(r.workloads[0].ms, 1000.0);
        assert_eq!(r.workloads[0].instructions, Some((1000.0, 950.0, 1010.0)));
        assert!(analyse(
            System::Wasm86,
            0,
            json!({ "prompt": { "t": 1.0 }, "markers": [] })
        )
        .is_err());

        // wasm86-jit is the same page: its counts come from the same fields, and without them
        // it is an error, as for wasm86; v86 counts nothing.
        let rec = json!({
            "prompt": { "t": 1500.0 },
            "markers": [
                { "kind": "begin", "name": "a", "t": 3000.0, "instructions": 100.0, "instructionsBefore": 90.0 },
                { "kind": "end", "name": "a", "t": 3500.0, "instructions": 1100.0, "instructionsBefore": 1050.0 },
            ],
        });
        let r = analyse(System::Wasm86Jit, 2, rec).unwrap();
        assert_eq!((r.system, r.rep, r.boot_s), (System::Wasm86Jit, 2, 1.5));
        assert_eq!(r.workloads[0].ms, 500.0);
        assert_eq!(r.workloads[0].instructions, Some((1000.0, 950.0, 1010.0)));
        let uncounted = json!({
            "prompt": { "t": 1500.0 },
            "markers": [
                { "kind": "begin", "name": "a", "t": 3000.0 },
                { "kind": "end", "name": "a", "t": 3500.0 },
            ],
        });
        for sys in [System::Wasm86, System::Wasm86Jit] {
            let e = analyse(sys, 0, uncounted.clone()).unwrap_err();
            assert!(e.contains(&format!("the {} page", sys.name())), "{e}");
            assert!(e.contains("no instruction counts"), "{e}");
        }
        let v86 = analyse(System::V86Jit, 0, uncounted).unwrap();
        assert_eq!(v86.workloads[0].instructions, None);
    }

    /// A page run: boot seconds, and per workload (name, seconds, the page's count).
    fn page_run(sys: System, rep: usize, boot_s: f64, w: &[(&str, f64, f64)]) -> Run {
        let mut markers = Vec::new();
        let (mut t, mut c) = (boot_s * 1000.0 + 500.0, 1e9);
        for &(name, secs, count) in w {
            let counted = |t: f64, c: f64| {
                if sys.is_wasm86_page() {
                    json!({ "t": t, "instructions": c, "instructionsBefore": c })
                } else {
                    json!({ "t": t })
                }
            };
            let mut b = counted(t, c);
            b["kind"] = json!("begin");
            b["name"] = json!(name);
            (t, c) = (t + secs * 1000.0, c + count);
            let mut e = counted(t, c);
            e["kind"] = json!("end");
            e["name"] = json!(name);
            markers.extend([b, e]);
        }
        markers.push(json!({ "kind": "done", "name": "", "t": t }));
        analyse(
            sys,
            rep,
            json!({ "prompt": { "t": boot_s * 1000.0 }, "markers": markers }),
        )
        .unwrap()
    }

    #[test]
    fn wasm86_jit_is_summarised_against_v86_jit_and_the_interpreter() {
        let mut runs = Vec::new();
        for rep in 0..3 {
            let slow = if rep == 1 { 1.5 } else { 1.0 };
            // isprime 100 M, gzip 200 M, forkexec 50 M instructions on wasm86's page.
            runs.push(page_run(
                System::Wasm86,
                rep,
                4.0,
                &[
                    ("isprime", 1.0 * slow, 1e8),
                    ("gzip", 2.0, 2e8),
                    ("forkexec", 1.0, 5e7),
                ],
            ));
            // The jit page counts a little more: its MIPS still use wasm86's counts.
            let mut jit = page_run(
                System::Wasm86Jit,
                rep,
                2.0,
                &[
                    ("isprime", 0.25, 1.01e8),
                    ("gzip", 0.5, 2.02e8),
                    ("forkexec", 0.5, 5.05e7),
                ],
            );
            jit.stats = Some(json!({
                "instructions": 4e9,
                "jit": { "regionsCompiled": 120.0, "compiledInstructions": 3e9, "failures": 0.0,
                         "error": null },
            }));
            runs.push(jit);
            runs.push(page_run(
                System::V86Interp,
                rep,
                5.0,
                &[
                    ("isprime", 2.0, 0.0),
                    ("gzip", 4.0, 0.0),
                    ("forkexec", 2.0, 0.0),
                ],
            ));
            runs.push(page_run(
                System::V86Jit,
                rep,
                3.0,
                &[
                    ("isprime", 0.5, 0.0),
                    ("gzip", 0.4, 0.0),
                    ("forkexec", 0.25, 0.0),
                ],
            ));
        }
        let s = summarise(&runs).unwrap();
        assert_eq!(s.systems, SYSTEMS);
        assert_eq!(s.instructions, [1e8, 2e8, 5e7]);
        assert_eq!(s.instructions_jit, Some(vec![1.01e8, 2.02e8, 5.05e7]));
        // Per system: boot seconds and MIPS per run (wasm86's median count over each time).
        assert_eq!(s.boot[1], [2.0, 2.0, 2.0]);
        assert_eq!(s.mips[1][0], [400.0, 400.0, 400.0]);
        assert_eq!(s.mips[1][1], [400.0, 400.0, 400.0]);
        assert!((s.mips[0][0][1] - 100.0 / 1.5).abs() < 1e-9);
        assert_eq!(median(&s.mips[3][0]), 200.0);
        assert!(s.jit_problems.is_empty(), "{:?}", s.jit_problems);

        let (boot, mips) = s.ratio(System::Wasm86Jit, System::V86Jit).unwrap();
        assert_eq!(boot, 2.0 / 3.0);
        assert_eq!(mips, [2.0, 0.8, 0.5]);
        let (boot, mips) = s.ratio(System::Wasm86Jit, System::Wasm86).unwrap();
        assert_eq!(boot, 0.5);
        assert_eq!(mips, [4.0, 4.0, 2.0]);
        // Without wasm86-native its pair is left out.
        let names: Vec<String> = s
            .ratios()
            .iter()
            .map(|((a, b), _)| ratio_name(*a, *b))
            .collect();
        assert_eq!(
            names,
            [
                "wasm86/v86-interp",
                "wasm86/v86-jit",
                "wasm86-jit/v86-jit",
                "wasm86-jit/wasm86"
            ]
        );
        assert!(s.vs_native().is_none());

        // The target: boot faster (met), isprime at least 1.0x (met), gzip (NOT met); forkexec
        // has none.
        let v = s.jit_verdict().unwrap();
        assert_eq!(v.boot, (2.0 / 3.0, true));
        assert_eq!(
            v.mips,
            [
                ("isprime".to_string(), 2.0, Some(true)),
                ("gzip".to_string(), 0.8, Some(false)),
                ("forkexec".to_string(), 0.5, None),
            ]
        );
        assert!(!v.met());
        let all_met = JitVerdict {
            boot: (0.9, true),
            mips: vec![
                ("isprime".into(), 1.0, Some(true)),
                ("forkexec".into(), 0.1, None),
            ],
        };
        assert!(all_met.met());

        // The line per run says what the tier did; the JSON keeps the page's stats.
        assert_eq!(
            jit_note(&runs[1]).unwrap(),
            "jit: 120 regions compiled, 75.0% of instructions in compiled code"
        );
        assert_eq!(jit_note(&runs[0]), None);
        let j = run_json(&runs[1]);
        assert_eq!(j["system"], "wasm86-jit");
        assert_eq!(j["page_stats"]["jit"]["regionsCompiled"], 120.0);
        assert_eq!(j["workloads"][0]["instructions"], 1.01e8);
        assert!(j.get("jit_problem").is_none());

        // The JSON: wasm86-jit among the systems, like the others, and its ratios.
        let sj = summary_json(&s);
        let sys = &sj["systems"][1];
        assert_eq!(sys["system"], "wasm86-jit");
        assert_eq!(sys["boot_s"], json!([2.0, 2.0, 2.0]));
        assert_eq!(sys["boot_s_median"], 2.0);
        assert_eq!(sys["mips"]["gzip"], json!([400.0, 400.0, 400.0]));
        assert_eq!(sys["mips_median"]["isprime"], 400.0);
        assert_eq!(sj["systems"][3]["mips_median"]["gzip"], 500.0);
        assert_eq!(
            sj["instructions_median_jit"],
            json!([1.01e8, 2.02e8, 5.05e7])
        );
        assert_eq!(sj["ratios"][2]["name"], "wasm86-jit/v86-jit");
        assert_eq!(sj["ratios"][2]["mips_ratio"]["isprime"], 2.0);
        assert_eq!(sj["ratios"][3]["name"], "wasm86-jit/wasm86");
        assert_eq!(sj["ratios"].as_array().unwrap().len(), 4);
        let v = &sj["jit_vs_v86_jit"];
        assert_eq!(v["boot_met"], true);
        assert_eq!(v["mips_ratio"]["gzip"], 0.8);
        assert_eq!(v["mips_met"], json!({ "isprime": true, "gzip": false }));
        assert_eq!(v["all_met"], false);
        assert_eq!(sj["jit_vs_interpreter"]["boot_time_ratio"], 0.5);
        assert_eq!(sj["jit_vs_interpreter"]["mips_ratio"]["forkexec"], 2.0);
        assert_eq!(sj["browser_vs_native"], Value::Null);
        assert_eq!(sj["jit_problems"], json!([]));
        print_table(&s);
    }

    #[test]
    fn a_compiling_tier_that_did_not_run_is_a_warning() {
        let w = [("isprime", 1.0, 1e8)];
        let with = |stats: Value| {
            let mut r = page_run(System::Wasm86Jit, 0, 2.0, &w);
            r.stats = Some(stats);
            r
        };
        let off = with(json!({ "instructions": 1e9, "jit": null }));
        assert!(jit_problem(&off).unwrap().contains("was off"));
        assert_eq!(jit_note(&off), None);
        let mut never_asked = page_run(System::Wasm86Jit, 0, 2.0, &w);
        never_asked.stats = None;
        assert!(jit_problem(&never_asked).unwrap().contains("was off"));
        let stopped = with(json!({
            "instructions": 1e9,
            "jit": { "regionsCompiled": 3.0, "failures": 1.0, "error": "a module trapped" },
        }));
        let p = jit_problem(&stopped).unwrap();
        assert!(p.starts_with("wasm86-jit run 1: "), "{p}");
        assert!(p.contains("turned itself off: a module trapped"), "{p}");
        assert!(p.contains("1 compiling-tier failure"), "{p}");
        let idle = with(json!({ "instructions": 1e9, "jit": { "regionsCompiled": 0.0 } }));
        assert!(jit_problem(&idle).unwrap().contains("compiled nothing"));
        assert_eq!(run_json(&idle)["jit_problem"], json!(jit_problem(&idle)));
        // The interpreter's page has the tier off, and that is as it should be; on, it is not.
        let mut interp = page_run(System::Wasm86, 0, 2.0, &w);
        interp.stats = Some(json!({ "instructions": 1e9, "jit": { "regionsCompiled": 5.0 } }));
        assert!(jit_problem(&interp)
            .unwrap()
            .contains("was on without jit=1"));
        interp.stats = Some(json!({ "instructions": 1e9, "jit": null }));
        assert_eq!(jit_problem(&interp), None);
        assert_eq!(jit_problem(&page_run(System::V86Jit, 0, 2.0, &w)), None);
        let s = summarise(&[interp, off]).unwrap();
        assert_eq!(s.jit_problems.len(), 1);
    }

    #[test]
    fn native_json_gives_its_own_counts() {
        // What `wasm86 bench --reps 1 --small` writes, cut down to the fields that are read.
        let rec = json!({
            "command": "wasm86 bench --reps 1 --no-native --small",
            "boot": { "instructions": [275601675u64], "wall_s": [1.25], "median_wall_s": 1.25 },
            "workloads": [
                { "name": "isprime", "instructions": [20000000u64], "wall_s": [0.5] },
                { "name": "gzip", "instructions": [30000000u64], "wall_s": [0.25] },
            ],
            "deterministic": true,
        });
        let r = analyse_native(1, rec).unwrap();
        assert_eq!(r.system, System::Wasm86Native);
        assert_eq!(r.rep, 1);
        assert_eq!(r.boot_s, 1.25);
        assert_eq!(r.boot_instructions, Some(275_601_675.0));
        let names: Vec<&str> = r.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["isprime", "gzip"]);
        assert_eq!(r.workloads[0].ms, 500.0);
        assert_eq!(r.workloads[1].instructions, Some((3e7, 3e7, 3e7)));

        // Its MIPS come from its own counts, the pages' from wasm86's page counter.
        let page = analyse(
            System::Wasm86,
            0,
            json!({
                "prompt": { "t": 2000.0 },
                "markers": [
                    { "kind": "begin", "name": "isprime", "t": 0.0, "instructions": 0.0, "instructionsBefore": 0.0 },
                    { "kind": "end", "name": "isprime", "t": 1000.0, "instructions": 4e7, "instructionsBefore": 4e7 },
                    { "kind": "begin", "name": "gzip", "t": 1000.0, "instructions": 4e7, "instructionsBefore": 4e7 },
                    { "kind": "end", "name": "gzip", "t": 2000.0, "instructions": 8e7, "instructionsBefore": 8e7 },
                ],
            }),
        )
        .unwrap();
        let s = summarise(&[page, r]).unwrap();
        assert_eq!(
            s.systems,
            [
                System::Wasm86,
                System::Wasm86Native,
                System::Wasm86Jit,
                System::V86Interp,
                System::V86Jit
            ]
        );
        let native = s.index(System::Wasm86Native).unwrap();
        assert_eq!(native, 1);
        assert_eq!(s.mips[native][0], [40.0]);
        assert_eq!(s.mips[native][1], [120.0]);
        assert_eq!(s.mips[0][0], [40.0]);
        // No wasm86-jit run: no cross-check count and no problem with it.
        assert_eq!(s.instructions_jit, None);
        assert!(s.jit_problems.is_empty());
        let (boot, mips) = s.vs_native().unwrap();
        assert_eq!(boot, 2.0 / 1.25);
        assert_eq!(mips, [1.0, 40.0 / 120.0]);
        assert_eq!(slower(1.0 / mips[1]), "3.00x slower");
        assert_eq!(slower(0.8), "1.25x faster");
        // The native column is the last pair of the ratios (here the only one: the others'
        // systems did not run), and in the JSON as before.
        let pairs: Vec<(System, System)> = s.ratios().iter().map(|(p, _)| *p).collect();
        assert_eq!(pairs, [(System::Wasm86, System::Wasm86Native)]);
        assert!(s.jit_verdict().is_none());
        // The page ran in repetition 1, native in repetition 2: no pair, so the target is not
        // judged, and the ratio of medians is still shown.
        let paired = s.vs_native_paired().unwrap();
        assert_eq!(paired.boot, [None, None]);
        assert_eq!(paired.mips, [[None, None], [None, None]]);
        let v = s.native_verdict().unwrap();
        assert_eq!(v.boot, (None, 2.0 / 1.25));
        assert_eq!(v.workloads[1].slowdown, None);
        assert_eq!(v.workloads[1].met, None);
        assert_eq!(v.workloads[1].paired, (0, 2));
        assert!((v.workloads[1].slowdown_of_medians - 3.0).abs() < 1e-12);
        let [line, _] = native_lines(&s).unwrap();
        assert!(
            line.contains("gzip not judged: no repetition ran both (ratio of medians 3.00x)"),
            "{line}"
        );
        let sj = summary_json(&s);
        assert_eq!(sj["browser_vs_native"]["boot_time_ratio"], 2.0 / 1.25);
        assert_eq!(sj["browser_vs_native"]["met"]["gzip"], Value::Null);
        assert_eq!(
            sj["browser_vs_native"]["paired"]["mips_ratio"]["gzip"],
            Value::Null
        );
        assert_eq!(sj["systems"][1]["system"], "wasm86-native");
        assert_eq!(sj["instructions_native"], json!([2e7, 3e7]));
        assert_eq!(sj["instructions_median_jit"], Value::Null);
        print_table(&s);

        // Missing or malformed fields are errors with words, not panics.
        assert!(analyse_native(0, json!({})).unwrap_err().contains("boot"));
        let no_count = json!({
            "boot": { "instructions": [1], "wall_s": [1.0] },
            "workloads": [{ "name": "gzip", "wall_s": [0.5] }],
        });
        let e = analyse_native(0, no_count).unwrap_err();
        assert!(e.contains("gzip") && e.contains("instructions"), "{e}");
        assert!(analyse_native(
            0,
            json!({ "boot": { "instructions": [1], "wall_s": [1.0] }, "workloads": [] })
        )
        .is_err());
    }

    /// A wasm86-native run: boot seconds, and per workload (name, seconds, its own count), read
    /// from the JSON `wasm86 bench --reps 1` writes.
    fn native_run(rep: usize, boot_s: f64, w: &[(&str, f64, f64)]) -> Run {
        let workloads: Vec<Value> = w
            .iter()
            .map(|&(name, secs, count)| {
                json!({ "name": name, "wall_s": [secs], "instructions": [count] })
            })
            .collect();
        analyse_native(
            rep,
            json!({
                "boot": { "wall_s": [boot_s], "instructions": [3e8] },
                "workloads": workloads,
            }),
        )
        .unwrap()
    }

    /// Close enough for ratios of computed MIPS.
    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn browser_vs_native_pairs_runs_by_repetition() {
        // Five repetitions of the page (isprime 100 M, gzip 200 M instructions) and native (the
        // same counts), in the order they run. Repetition 2: the host slow for both (the pair
        // still 1.2x and 1.4x apart); repetition 3: the page alone hit a slow patch on isprime,
        // native alone on gzip; repetition 4: native failed (the page took 10 s on isprime,
        // which must pair with nothing); repetition 5: the page failed.
        let page = |rep, isprime, gzip| {
            page_run(
                System::Wasm86,
                rep,
                4.0,
                &[("isprime", isprime, 1e8), ("gzip", gzip, 2e8)],
            )
        };
        let native = |rep, boot, isprime, gzip| {
            native_run(rep, boot, &[("isprime", isprime, 1e8), ("gzip", gzip, 2e8)])
        };
        let runs = vec![
            page(0, 1.2, 1.4),
            native(0, 2.0, 1.0, 1.0),
            page(1, 2.4, 2.8),
            native(1, 4.0, 2.0, 2.0),
            page(2, 1.6, 2.0),
            native(2, 2.0, 1.0, 2.0),
            page(3, 10.0, 0.5),
            native(4, 1.0, 0.5, 2.0),
        ];
        let s = summarise(&runs).unwrap();
        assert_eq!(s.repetitions(), 5);
        assert_eq!(s.reps[0], [0, 1, 2, 3]);
        assert_eq!(s.reps[1], [0, 1, 2, 4]);

        // Per repetition the page's MIPS over native's of the same repetition; none where
        // either run is missing (not the page's 4th run against native's 4th, which is of
        // repetition 5).
        let p = s.vs_native_paired().unwrap();
        assert_eq!(p.boot, [Some(2.0), Some(1.0), Some(2.0), None, None]);
        let expected = [
            [
                Some(1.0 / 1.2),
                Some(1.0 / 1.2),
                Some(1.0 / 1.6),
                None,
                None,
            ],
            [Some(1.0 / 1.4), Some(1.0 / 1.4), Some(1.0), None, None],
        ];
        for (got, want) in p.mips.iter().zip(&expected) {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!(
                    g.zip(*w)
                        .map_or(g.is_none() && w.is_none(), |(g, w)| near(g, w)),
                    "{got:?} {want:?}"
                );
            }
        }

        // The medians of those judge the target; the ratios of medians, thrown off by the
        // drift, give the other answer on both workloads and stay beside them (and in the
        // ratio table).
        let v = s.native_verdict().unwrap();
        assert_eq!(v.boot, (Some(2.0), 2.0));
        let isprime = &v.workloads[0];
        assert!(near(isprime.slowdown.unwrap(), 1.2), "{isprime:?}");
        assert_eq!((isprime.met, isprime.paired), (Some(true), (3, 5)));
        // Page MIPS 83.3, 41.7, 62.5, 10 (median 52.1) over native's 100, 50, 100, 200 (100).
        assert!(near(isprime.slowdown_of_medians, 1.92), "{isprime:?}");
        let gzip = &v.workloads[1];
        assert!(near(gzip.slowdown.unwrap(), 1.4), "{gzip:?}");
        assert_eq!((gzip.met, gzip.paired), (Some(false), (3, 5)));
        // Page MIPS 142.9, 71.4, 100, 400 (median 121.4) over native's 200, 100, 100, 100 (100).
        assert!(
            near(gzip.slowdown_of_medians, 1.0 / (850.0 / 700.0)),
            "{gzip:?}"
        );
        let (_, of_medians) = s.vs_native().unwrap();
        assert!(near(1.0 / of_medians[0], 1.92));

        let [verdict, per_repetition] = native_lines(&s).unwrap();
        assert_eq!(
            verdict,
            "browser build vs native (target: at most 1.3x slower; paired per repetition, \
             median): isprime 1.20x slower (met; 3 of 5 repetitions; ratio of medians 1.92x), \
             gzip 1.40x slower (NOT met; 3 of 5 repetitions; ratio of medians 0.82x); \
             boot 2.00x slower (ratio of medians 2.00x)"
        );
        assert_eq!(
            per_repetition,
            "browser build vs native per repetition (how many times slower, repetition 1 to 5; \
             - where a run of the pair failed): isprime 1.20x 1.20x 1.60x - -; \
             gzip 1.40x 1.40x 1.00x - -; boot 2.00x 1.00x 2.00x - -"
        );

        // The JSON: the ratios of medians as before, the paired ones, and the judgement.
        let sj = summary_json(&s);
        let b = &sj["browser_vs_native"];
        assert_eq!(b["boot_time_ratio"], 2.0);
        assert!(near(b["slowdown"]["isprime"].as_f64().unwrap(), 1.92));
        assert_eq!(b["target_slowdown_max"], NATIVE_TARGET);
        assert!(near(
            b["paired"]["slowdown"]["isprime"].as_f64().unwrap(),
            1.2
        ));
        assert!(near(
            b["paired"]["mips_ratio"]["gzip"].as_f64().unwrap(),
            1.0 / 1.4
        ));
        assert_eq!(b["paired"]["boot_time_ratio"], 2.0);
        assert_eq!(
            b["paired"]["boot_time_per_repetition"],
            json!([2.0, 1.0, 2.0, null, null])
        );
        let gzip_each = &b["paired"]["per_repetition"]["gzip"];
        assert_eq!(gzip_each.as_array().map(Vec::len), Some(5));
        assert_eq!(gzip_each[2], 1.0);
        assert_eq!((&gzip_each[3], &gzip_each[4]), (&Value::Null, &Value::Null));
        assert_eq!(b["met"], json!({ "isprime": true, "gzip": false }));
        print_table(&s);

        // With every pair there, the same drift-free runs give the same answer either way.
        let steady: Vec<Run> = (0..3)
            .flat_map(|rep| [page(rep, 1.2, 1.4), native(rep, 2.0, 1.0, 1.0)])
            .collect();
        let v = summarise(&steady).unwrap().native_verdict().unwrap();
        for w in &v.workloads {
            assert!(near(w.slowdown.unwrap(), w.slowdown_of_medians), "{w:?}");
            assert_eq!(w.paired, (3, 3));
        }
        let [verdict, _] = native_lines(&summarise(&steady).unwrap()).unwrap();
        assert!(
            verdict.contains("isprime 1.20x slower (met; ratio of medians 1.20x)"),
            "{verdict}"
        );
    }

    /// The child's failures are messages: a fake `wasm86` (a shell script) that fails, that
    /// writes no JSON, that writes broken JSON, and one that writes a good record.
    #[tokio::test(flavor = "current_thread")]
    async fn native_child_failures_are_messages() {
        let dir = std::env::temp_dir().join(format!("bench-web-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            let _ = Command::new("chmod").arg("+x").arg(&p).status();
            Native {
                bin: p,
                flags: vec!["--small".into()],
            }
        };
        // The JSON goes into the directory after --out-dir.
        let out = r#"while [ "$1" != --out-dir ]; do shift; done; d=$2"#;
        let cfg = Config {
            root: PathBuf::from("root"),
            reps: 1,
            timeout: Duration::from_secs(30),
            out: dir.clone(),
            stand_in: false,
            command: Some("/bench/run small".into()),
            native: None,
            native_skipped: None,
        };
        let fails = script(
            "fails",
            "echo 'guest: the guest halted for good' >&2; exit 3",
        );
        let e = run_native(&cfg, &fails, 0).await.unwrap_err();
        assert!(
            e.contains("wasm86-native run 1") && e.contains("exit status: 3"),
            "{e}"
        );
        assert!(
            e.contains("halted for good") && e.contains("--small"),
            "{e}"
        );
        let silent = script("silent", "exit 0");
        let e = run_native(&cfg, &silent, 0).await.unwrap_err();
        assert!(e.contains("no native-*.json"), "{e}");
        let broken = script(
            "broken",
            &format!("{out}; echo '{{\"boot\": [' >\"$d/native-1.json\""),
        );
        let e = run_native(&cfg, &broken, 0).await.unwrap_err();
        assert!(e.contains("is not valid JSON"), "{e}");
        let good = script(
            "good",
            &format!(
                "{out}; echo '{{\"boot\": {{\"wall_s\": [0.5], \"instructions\": [9]}}, \
                 \"workloads\": [{{\"name\": \"isprime\", \"wall_s\": [0.25], \
                 \"instructions\": [5000000]}}]}}' >\"$d/native-1.json\""
            ),
        );
        let r = run_native(&cfg, &good, 0).await.unwrap();
        assert_eq!(r.workloads[0].instructions, Some((5e6, 5e6, 5e6)));
        let cmd = r.command.unwrap();
        assert_eq!(cmd[1..5], ["bench", "--reps", "1", "--no-native"]);
        assert!(cmd.contains(&"root/images/bench-initramfs.cpio.gz".to_string()));
        assert_eq!(cmd.last().unwrap(), "--small");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bench_commands_map_onto_wasm86_bench_flags() {
        let flags = |c: &str| bench_flags(c).map(|f| f.join(" "));
        assert_eq!(flags("/bench/run").unwrap(), "");
        assert_eq!(flags("/bench/run small").unwrap(), "--small");
        assert_eq!(flags(" /bench/run  full ").unwrap(), "");
        assert_eq!(flags("/bench/run small full").unwrap(), "");
        assert_eq!(
            flags("/bench/run isprime small").unwrap(),
            "--workloads isprime --small"
        );
        assert_eq!(
            flags("/bench/run isprime forkexec").unwrap(),
            "--workloads isprime,forkexec"
        );
        assert_eq!(flags("/bench/run isprime gzip forkexec").unwrap(), "");
        assert!(flags("/bench/run gzip isprime")
            .unwrap_err()
            .contains("order"));
        assert!(flags("/bench/run gzip gzip").is_err());
        assert!(flags("/bench/run huge").unwrap_err().contains("huge"));
        assert!(flags("echo hi; /bench/run").is_err());
        assert!(flags(STAND_IN_COMMAND).is_err());
        assert_eq!(
            shell_line(&["a".into(), "console=ttyS0 x".into(), "it's".into()]),
            "a 'console=ttyS0 x' 'it'\\''s'"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(cell(&[1.0, 3.0, 2.0], 1), "2.0 (1.0–3.0)");
    }
}
