//! `make bench-web`: wasm86's own page and v86 (its interpreter and its JIT) side by side in one
//! headless Chromium, booting the same kernel, initrd and command line, running the benchmark
//! guest's workloads, interleaved run by run (wasm86, v86-interp, v86-jit, wasm86, ...).
//!
//! Everything timed is timed in the page: `bench/recorder.js` timestamps serial output with
//! `performance.now()` as it arrives (wasm86: `window.wasm86`'s "serial" event, which also carries
//! the guest's retired-instruction count; v86: its `serial0-output-byte` listener) and types the
//! benchmark command at the shell prompt. WebDriver only starts each run, waits for the guest's
//! `WASM86-BENCH done` (polling once a second) and collects the record at the end.
//!
//! Guest instructions per workload are counted once, by wasm86 (the count at the end marker
//! minus the count at the begin marker, each known to within one run slice of the worker); the
//! median over wasm86's runs is divided by each system's wall time to give MIPS.
//!
//! Usage: `bench_web --root target/bench-site [--reps N] [--timeout SECONDS] [--out DIR]
//! [--stand-in] [--command CMD]` (CMD instead of `/bench/run`, e.g. `/bench/run small`). The root is site/ plus `bench/` (v86.html, recorder.js, v86/, firmware/) and,
//! when it exists, `images/bench-initramfs.cpio.gz`; without that file a stand-in command (busy
//! shell loops between the same markers) runs on the bundled initramfs.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasm86_webdriver::{js, tail, ChromeDriver, Client, Res, Server};

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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Wasm86,
    V86Interp,
    V86Jit,
}

const SYSTEMS: [System; 3] = [System::Wasm86, System::V86Interp, System::V86Jit];

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Wasm86 => "wasm86",
            System::V86Interp => "v86-interp",
            System::V86Jit => "v86-jit",
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
        };
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
                "-h" | "--help" => {
                    println!(
                        "bench_web --root DIR [--reps N] [--timeout SECONDS] [--out DIR] [--stand-in] \
                         [--command CMD]"
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

/// One workload of one run.
#[derive(Clone, Debug)]
struct Workload {
    name: String,
    ms: f64,
    /// wasm86 only: instructions between the markers (end-of-slice counts), and the bounds the
    /// slices give: at least `min`, at most `max`.
    instructions: Option<(f64, f64, f64)>,
}

/// One run: a page load, boot, and the workloads.
struct Run {
    system: System,
    rep: usize,
    boot_s: f64,
    workloads: Vec<Workload>,
    record: Value,
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
        workloads,
        record,
    })
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
    /// Median instruction count per workload (wasm86's runs).
    instructions: Vec<f64>,
    /// [system][run] boot seconds.
    boot: Vec<Vec<f64>>,
    /// [system][workload][run] MIPS.
    mips: Vec<Vec<Vec<f64>>>,
}

fn summarise(runs: &[Run]) -> Res<Summary> {
    let first = runs.first().ok_or("no runs")?;
    let workloads: Vec<String> = first.workloads.iter().map(|w| w.name.clone()).collect();
    for r in runs {
        let names: Vec<&str> = r.workloads.iter().map(|w| w.name.as_str()).collect();
        if names != workloads.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(format!(
                "{} run {} ran the workloads {names:?}, the first run {workloads:?}",
                r.system.name(),
                r.rep + 1
            ));
        }
    }
    let instructions: Vec<f64> = (0..workloads.len())
        .map(|i| {
            let counts: Vec<f64> = runs
                .iter()
                .filter(|r| r.system == System::Wasm86)
                .filter_map(|r| r.workloads[i].instructions.map(|c| c.0))
                .collect();
            median(&counts)
        })
        .collect();
    let boot = SYSTEMS
        .iter()
        .map(|&s| {
            runs.iter()
                .filter(|r| r.system == s)
                .map(|r| r.boot_s)
                .collect()
        })
        .collect();
    let mips = SYSTEMS
        .iter()
        .map(|&s| {
            (0..workloads.len())
                .map(|i| {
                    runs.iter()
                        .filter(|r| r.system == s)
                        .map(|r| instructions[i] / (r.workloads[i].ms / 1000.0) / 1e6)
                        .collect()
                })
                .collect()
        })
        .collect();
    Ok(Summary {
        workloads,
        instructions,
        boot,
        mips,
    })
}

fn print_table(s: &Summary) {
    let mut rows: Vec<Vec<String>> = vec![vec![
        String::new(),
        "wasm86".into(),
        "v86-interp".into(),
        "v86-jit".into(),
        "wasm86/v86-interp".into(),
        "wasm86/v86-jit".into(),
    ]];
    let ratio = |a: &[f64], b: &[f64]| format!("{:.2}", median(a) / median(b));
    rows.push(
        ["boot to prompt (s)".to_string()]
            .into_iter()
            .chain(s.boot.iter().map(|v| cell(v, 1)))
            .chain([ratio(&s.boot[0], &s.boot[1]), ratio(&s.boot[0], &s.boot[2])])
            .collect(),
    );
    for (i, w) in s.workloads.iter().enumerate() {
        let m: Vec<&Vec<f64>> = s.mips.iter().map(|per| &per[i]).collect();
        rows.push(
            [format!("{w} (MIPS)")]
                .into_iter()
                .chain(m.iter().map(|v| cell(v, 1)))
                .chain([ratio(m[0], m[1]), ratio(m[0], m[2])])
                .collect(),
        );
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
    let counts: Vec<String> = s
        .workloads
        .iter()
        .zip(&s.instructions)
        .map(|(w, c)| format!("{w} {:.1} M", c / 1e6))
        .collect();
    println!(
        "guest instructions per workload (wasm86's counter, median): {}",
        counts.join(", ")
    );
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
    json!({
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
    let mut runs = Vec::new();
    for rep in 0..cfg.reps {
        for sys in SYSTEMS {
            let run = run_one(client, base, cfg, sys, rep).await?;
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
                "  {:<10} run {}: prompt after {:.1} s; {}",
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
        "order": "interleaved: wasm86, v86-interp, v86-jit per repetition, a fresh tab per run",
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
            "systems": SYSTEMS.iter().enumerate().map(|(i, s)| json!({
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
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(cell(&[1.0, 3.0, 2.0], 1), "2.0 (1.0–3.0)");
    }
}
