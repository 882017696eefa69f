//! `make bench-web`: wasm86's own page and v86 (its interpreter and its JIT) side by side in one
//! headless Chromium, booting the same kernel, initrd and command line, running the benchmark
//! guest's workloads, interleaved run by run (wasm86, v86-interp, v86-jit, wasm86-native,
//! wasm86, ...). wasm86-native is the same core built natively: `wasm86 bench --reps 1
//! --no-native` as a child process (no browser) on the same kernel, initrd, command line and RAM,
//! with its own deterministic instruction counts, so that the browser build can be set against
//! it on the same workloads.
//!
//! Everything timed is timed in the page: `bench/recorder.js` timestamps serial output with
//! `performance.now()` as it arrives (wasm86: `window.wasm86`'s "serial" event, which also carries
//! the guest's retired-instruction count; v86: its `serial0-output-byte` listener) and types the
//! benchmark command at the shell prompt. WebDriver only starts each run, waits for the guest's
//! `WASM86-BENCH done` (polling once a second) and collects the record at the end.
//!
//! Guest instructions per workload are counted once for the pages, by wasm86's page (the count
//! at the end marker minus the count at the begin marker, each known to within one run slice of
//! the worker); the median over wasm86's runs is divided by each page's wall time to give MIPS.
//! wasm86-native divides its own exact counts by its own wall times.
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Wasm86,
    V86Interp,
    V86Jit,
    /// `wasm86 bench`: the same core built natively, a child process.
    Wasm86Native,
}

/// The systems that run in the browser, in the order each repetition runs them.
const SYSTEMS: [System; 3] = [System::Wasm86, System::V86Interp, System::V86Jit];

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Wasm86 => "wasm86",
            System::V86Interp => "v86-interp",
            System::V86Jit => "v86-jit",
            System::Wasm86Native => "wasm86-native",
        }
    }
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
            System::Wasm86 => format!(
                "index.html?initrd={}&append={}&memory={}",
                enc(self.initrd()),
                enc(APPEND),
                MEMORY_MIB
            ),
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
    /// wasm86 only: instructions between the markers (end-of-slice counts), and the bounds the
    /// slices give: at least `min`, at most `max`.
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
                if system == System::Wasm86 && instructions.is_none() {
                    return Err(format!(
                        "{who}: the wasm86 page's serial event carried no instruction counts"
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
    if sys == System::Wasm86 {
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
    analyse(sys, rep, record)
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
    /// Median instruction count per workload (wasm86's page runs).
    instructions: Vec<f64>,
    /// wasm86-native's own instruction count per workload (median; deterministic, so all equal).
    native_instructions: Option<Vec<f64>>,
    /// [system][run] boot seconds.
    boot: Vec<Vec<f64>>,
    /// [system][workload][run] MIPS.
    mips: Vec<Vec<Vec<f64>>>,
}

impl Summary {
    fn index(&self, sys: System) -> Option<usize> {
        self.systems.iter().position(|&s| s == sys)
    }

    /// Browser vs native, from the medians: boot time ratio (wasm86 page / native) and per
    /// workload the MIPS ratio (wasm86 page / native; below 1 the browser build is slower).
    fn vs_native(&self) -> Option<(f64, Vec<f64>)> {
        let (b, n) = (
            self.index(System::Wasm86)?,
            self.index(System::Wasm86Native)?,
        );
        let boot = median(&self.boot[b]) / median(&self.boot[n]);
        let mips = (0..self.workloads.len())
            .map(|i| median(&self.mips[b][i]) / median(&self.mips[n][i]))
            .collect();
        Some((boot, mips))
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
    let count_median = |sys: System| -> Vec<f64> {
        (0..workloads.len())
            .map(|i| {
                let counts: Vec<f64> = runs
                    .iter()
                    .filter(|r| r.system == sys)
                    .filter_map(|r| r.workloads[i].instructions.map(|c| c.0))
                    .collect();
                median(&counts)
            })
            .collect()
    };
    let instructions = count_median(System::Wasm86);
    let has_native = runs.iter().any(|r| r.system == System::Wasm86Native);
    let native_instructions = has_native.then(|| count_median(System::Wasm86Native));
    let mut systems = SYSTEMS.to_vec();
    if has_native {
        systems.push(System::Wasm86Native);
    }
    let boot = systems
        .iter()
        .map(|&s| {
            runs.iter()
                .filter(|r| r.system == s)
                .map(|r| r.boot_s)
                .collect()
        })
        .collect();
    let mips = systems
        .iter()
        .map(|&s| {
            (0..workloads.len())
                .map(|i| {
                    runs.iter()
                        .filter(|r| r.system == s)
                        .map(|r| {
                            // The pages: wasm86's page count (v86 counts nothing); native: its
                            // own exact count.
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
        native_instructions,
        boot,
        mips,
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

fn print_table(s: &Summary) {
    let vs_native = s.vs_native();
    let mut header: Vec<String> = vec![String::new()];
    header.extend(s.systems.iter().map(|sys| sys.name().to_string()));
    header.extend(["wasm86/v86-interp".into(), "wasm86/v86-jit".into()]);
    if vs_native.is_some() {
        header.push("wasm86/native".into());
    }
    let mut rows: Vec<Vec<String>> = vec![header];
    let ratio = |a: &[f64], b: &[f64]| format!("{:.2}", median(a) / median(b));
    let mut boot_row: Vec<String> = vec!["boot to prompt (s)".to_string()];
    boot_row.extend(s.boot.iter().map(|v| cell(v, 1)));
    boot_row.extend([ratio(&s.boot[0], &s.boot[1]), ratio(&s.boot[0], &s.boot[2])]);
    if let Some((t, _)) = &vs_native {
        boot_row.push(format!("{t:.2} ({})", slower(*t)));
    }
    rows.push(boot_row);
    for (i, w) in s.workloads.iter().enumerate() {
        let m: Vec<&Vec<f64>> = s.mips.iter().map(|per| &per[i]).collect();
        let mut row = vec![format!("{w} (MIPS)")];
        row.extend(m.iter().map(|v| cell(v, 1)));
        row.extend([ratio(m[0], m[1]), ratio(m[0], m[2])]);
        if let Some((_, r)) = &vs_native {
            row.push(format!("{:.2} ({})", r[i], slower(1.0 / r[i])));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
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
    println!(
        "medians (min–max) over the runs; ratios of medians (boot: time, wasm86 faster below 1; \
         MIPS: wasm86 faster above 1)"
    );
    let counts = |c: &[f64]| -> String {
        s.workloads
            .iter()
            .zip(c)
            .map(|(w, c)| format!("{w} {:.1} M", c / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "guest instructions per workload (wasm86's page counter, median): {}",
        counts(&s.instructions)
    );
    if let Some(native) = &s.native_instructions {
        println!(
            "wasm86-native: `wasm86 bench` (the same core built natively, deterministic mode), \
             MIPS from its own counts: {}; its boot is power-on to prompt, the pages' from \
             navigation start (page load and downloads included)",
            counts(native)
        );
    }
    if let Some((_, r)) = &vs_native {
        let parts: Vec<String> = s
            .workloads
            .iter()
            .zip(r)
            .map(|(w, r)| {
                let f = 1.0 / r;
                let verdict = if f <= NATIVE_TARGET { "met" } else { "NOT met" };
                format!("{w} {} ({verdict})", slower(f))
            })
            .collect();
        println!(
            "browser build vs native (target: at most {NATIVE_TARGET}x slower): {}",
            parts.join(", ")
        );
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
    o
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
    match (&cfg.native, &cfg.native_skipped) {
        (Some(n), _) => println!(
            "bench-web: wasm86-native: {} (last in each repetition, with an empty tab)",
            shell_line(&native_command(cfg, n, Path::new("<temp dir>")))
        ),
        (None, Some(why)) => println!("bench-web: wasm86-native skipped: {why}"),
        (None, None) => {}
    }
    let mut runs = Vec::new();
    for rep in 0..cfg.reps {
        let mut systems = SYSTEMS.to_vec();
        if cfg.native.is_some() {
            systems.push(System::Wasm86Native);
        }
        for sys in systems {
            let run = match &cfg.native {
                Some(native) if sys == System::Wasm86Native => {
                    // The last page's machine would go on running beside the native one.
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
            println!(
                "  {:<13} run {}: prompt after {:.1} s; {}",
                sys.name(),
                rep + 1,
                run.boot_s,
                parts.join(", ")
            );
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
        "order": if cfg.native.is_some() {
            "interleaved: wasm86, v86-interp, v86-jit, wasm86-native per repetition, a fresh tab \
             per page run, an empty tab while wasm86-native (a child process) runs"
        } else {
            "interleaved: wasm86, v86-interp, v86-jit per repetition, a fresh tab per run"
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
        "summary": {
            "workloads": summary.workloads,
            "instructions_median": summary.instructions,
            "instructions_native": summary.native_instructions,
            "browser_vs_native": summary.vs_native().map(|(boot, mips)| json!({
                "boot_time_ratio": boot,
                "mips_ratio": summary.workloads.iter().cloned().zip(mips.iter().map(|&r| json!(r)))
                    .collect::<serde_json::Map<_, _>>(),
                "slowdown": summary.workloads.iter().cloned().zip(mips.iter().map(|&r| json!(1.0 / r)))
                    .collect::<serde_json::Map<_, _>>(),
                "target_slowdown_max": NATIVE_TARGET,
            })),
            "systems": summary.systems.iter().enumerate().map(|(i, s)| json!({
                "system": s.name(),
                "boot_s": summary.boot[i],
                "mips": summary.workloads.iter().enumerate()
                    .map(|(w, name)| (name.clone(), json!(summary.mips[i][w])))
                    .collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
        },
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
                System::V86Interp,
                System::V86Jit,
                System::Wasm86Native
            ]
        );
        assert_eq!(s.mips[3][0], [40.0]);
        assert_eq!(s.mips[3][1], [120.0]);
        assert_eq!(s.mips[0][0], [40.0]);
        let (boot, mips) = s.vs_native().unwrap();
        assert_eq!(boot, 2.0 / 1.25);
        assert_eq!(mips, [1.0, 40.0 / 120.0]);
        assert_eq!(slower(1.0 / mips[1]), "3.00x slower");
        assert_eq!(slower(0.8), "1.25x faster");

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
