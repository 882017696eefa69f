//! `wasm86 bench`: the Linux benchmark guest. Boots the bundled kernel with
//! `images/bench-initramfs.cpio.gz` in deterministic mode, types `/bench/run` at the shell
//! prompt and notes the retired-instruction count and the wall time at each marker line the
//! script prints on the serial console (`WASM86-BENCH begin NAME`, `... end NAME`,
//! `WASM86-BENCH done`; see images/README.md). The same static i386 programs and busybox, taken
//! out of the initramfs, then run the same script directly on this host, so each workload's
//! wall time can be set against the host's. Medians of `--reps` runs are printed and every raw
//! number is saved as JSON under target/bench/.
//!
//! `wasm86 bench --synthetic` is the hand-assembled prime loop ([`synthetic`]), a CPU micro
//! benchmark without an operating system.

mod cpio;
mod guest;
mod host;
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The workloads of /bench/run, in the order it runs them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The static C program counting primes by trial division.
    Isprime,
    /// busybox gzip of a 1 MB text-like file.
    Gzip,
    /// A shell loop fork+exec'ing a static program.
    Forkexec,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Isprime, Workload::Gzip, Workload::Forkexec];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Isprime => "isprime",
            Workload::Gzip => "gzip",
            Workload::Forkexec => "forkexec",
        }
    }
}

/// Options of `wasm86 bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Run the synthetic micro benchmark instead: a paged protected-mode guest without an
    /// operating system counts primes by trial division; prints `instructions=N wall_ms=N
    /// mips=X primes=N` and fails if the guest's result is wrong.
    #[arg(long)]
    pub synthetic: bool,
    /// --synthetic: count the primes below this number [default: 1000000].
    #[arg(long, requires = "synthetic")]
    pub limit: Option<u32>,
    /// --synthetic: repeat the count this many times [default: 3].
    #[arg(long, requires = "synthetic")]
    pub iterations: Option<u32>,
    /// Run the whole benchmark this many times and report medians [default: 3].
    #[arg(long, conflicts_with = "synthetic")]
    pub reps: Option<u32>,
    /// Only these workloads (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with = "synthetic")]
    pub workloads: Vec<Workload>,
    /// The tiny sizes of `/bench/run ... small` (a quick check, not a measurement).
    #[arg(long, conflicts_with = "synthetic")]
    pub small: bool,
    /// Do not run the workloads natively on this host.
    #[arg(long, conflicts_with = "synthetic")]
    pub no_native: bool,
    /// The bzImage to boot [default: the bundled images/bzImage].
    #[arg(long, value_name = "PATH", conflicts_with = "synthetic")]
    pub kernel: Option<PathBuf>,
    /// The benchmark initramfs [default: the bundled images/bench-initramfs.cpio.gz].
    #[arg(long, value_name = "PATH", conflicts_with = "synthetic")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, value_name = "TEXT", default_value = "console=ttyS0")]
    pub append: String,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(16..=3072))]
    pub memory: u32,
    /// Copy the guest's serial output to stderr.
    #[arg(long, conflicts_with = "synthetic")]
    pub verbose: bool,
    /// Where to save the JSON record of the run [default: target/bench/ of this crate].
    #[arg(long, value_name = "DIR", conflicts_with = "synthetic")]
    pub out_dir: Option<PathBuf>,
}

/// The build identity: the version and, when `make` passed it at build time, the git commit.
pub fn build_identity() -> String {
    match option_env!("WASM86_GIT_COMMIT").filter(|c| !c.is_empty()) {
        Some(c) => format!("wasm86 {} (git {c})", env!("CARGO_PKG_VERSION")),
        None => format!("wasm86 {}", env!("CARGO_PKG_VERSION")),
    }
}

/// One workload's measurement: retired guest instructions (0 on the host) and wall seconds
/// between its begin and end markers.
#[derive(Clone, Debug)]
pub struct Span {
    pub name: String,
    pub instructions: u64,
    pub wall: f64,
}

/// Run `wasm86 bench`.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.synthetic {
        return synthetic::run(&synthetic::BenchOptions {
            limit: args.limit.unwrap_or(synthetic::DEFAULT_LIMIT),
            iterations: args.iterations.unwrap_or(synthetic::DEFAULT_ITERATIONS),
        });
    }
    let reps = args.reps.unwrap_or(3);
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    let workloads: Vec<Workload> = if args.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        // In /bench/run's order, each once.
        Workload::ALL
            .into_iter()
            .filter(|w| args.workloads.contains(w))
            .collect()
    };
    let mut script_args: Vec<String> = if workloads.len() == Workload::ALL.len() {
        Vec::new()
    } else {
        workloads.iter().map(|w| w.name().to_string()).collect()
    };
    if args.small {
        script_args.push("small".into());
    }

    let hint = " (the bundled guest is built by images/build.sh)";
    let kernel_path = args
        .kernel
        .clone()
        .unwrap_or_else(|| crate::console::bundled("bzImage"));
    let initrd_path = args
        .initrd
        .clone()
        .unwrap_or_else(|| crate::console::bundled("bench-initramfs.cpio.gz"));
    let kernel = (
        kernel_path.clone(),
        crate::console::read_file("kernel", &kernel_path).map_err(|e| format!("{e}{hint}"))?,
    );
    let initrd = (
        initrd_path.clone(),
        crate::console::read_file("initrd", &initrd_path).map_err(|e| format!("{e}{hint}"))?,
    );
    // Take the host's copies out first: a broken initramfs is reported before the long part.
    let host_files = if args.no_native {
        None
    } else {
        Some(host::HostFiles::extract(&initrd.0, &initrd.1)?)
    };

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let cpu = host_cpu_model();
    println!("{}", build_identity());
    println!("host: {cpu}");
    println!(
        "guest: {} + {}, append {:?}, {} MiB, deterministic; typing: /bench/run{}",
        kernel.0.display(),
        initrd.0.display(),
        args.append,
        args.memory,
        script_args
            .iter()
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );

    let mut guest_runs = Vec::new();
    for rep in 1..=reps {
        let opts = guest::Options {
            kernel: &kernel,
            initrd: &initrd,
            append: &args.append,
            memory_mib: args.memory,
            script_args: &script_args,
            verbose: args.verbose,
        };
        let r = guest::run_once(&opts)?;
        println!(
            "wasm86 run {rep}/{reps}: boot {:.3} s ({} instructions){}",
            r.boot_wall,
            group(r.boot_instructions),
            r.spans
                .iter()
                .map(|s| format!(", {} {:.3} s ({})", s.name, s.wall, group(s.instructions)))
                .collect::<String>()
        );
        guest_runs.push(r);
    }

    let mut native_runs: Vec<Vec<Span>> = Vec::new();
    let mut native_error = None;
    if let Some(files) = &host_files {
        for rep in 1..=reps {
            match files.run_once(&script_args) {
                Ok(spans) => {
                    println!(
                        "native run {rep}/{reps}:{}",
                        spans
                            .iter()
                            .map(|s| format!(" {} {:.3} s", s.name, s.wall))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    native_runs.push(spans);
                }
                Err(e) => {
                    println!("native run: not available: {e}");
                    native_error = Some(e);
                    native_runs.clear();
                    break;
                }
            }
        }
    }

    // Deterministic mode: every run must retire exactly the same instructions.
    let first = &guest_runs[0];
    let mut nondeterministic = Vec::new();
    for (i, r) in guest_runs.iter().enumerate().skip(1) {
        if r.boot_instructions != first.boot_instructions {
            nondeterministic.push(format!(
                "boot: run 1 {} vs run {} {}",
                first.boot_instructions,
                i + 1,
                r.boot_instructions
            ));
        }
        for (a, b) in first.spans.iter().zip(&r.spans) {
            if a.instructions != b.instructions {
                nondeterministic.push(format!(
                    "{}: run 1 {} vs run {} {}",
                    a.name,
                    a.instructions,
                    i + 1,
                    b.instructions
                ));
            }
        }
    }

    // The report: medians.
    let boot_wall = median(guest_runs.iter().map(|r| r.boot_wall).collect());
    println!();
    println!(
        "boot to prompt: {boot_wall:.3} s, {} instructions ({:.1} MIPS)",
        group(first.boot_instructions),
        first.boot_instructions as f64 / boot_wall.max(1e-9) / 1e6
    );
    println!(
        "{:<10} {:>15} {:>10} {:>8} {:>10}  vs native (median of {reps})",
        "workload", "instructions", "wasm86 s", "MIPS", "native s"
    );
    let mut rows = Vec::new();
    for (k, span) in first.spans.iter().enumerate() {
        let walls: Vec<f64> = guest_runs.iter().map(|r| r.spans[k].wall).collect();
        let wall = median(walls.clone());
        let mips = span.instructions as f64 / wall.max(1e-9) / 1e6;
        let native_walls: Vec<f64> = native_runs.iter().map(|n| n[k].wall).collect();
        let native = (!native_walls.is_empty()).then(|| median(native_walls.clone()));
        let ratio = native.map(|n| wall / n.max(1e-9));
        println!(
            "{:<10} {:>15} {:>10.3} {:>8.1} {:>10}  {}",
            span.name,
            group(span.instructions),
            wall,
            mips,
            native.map_or("-".into(), |n| format!("{n:.3}")),
            ratio.map_or("-".into(), |r| format!("1/{r:.1} of native"))
        );
        rows.push(serde_json::json!({
            "name": span.name,
            "instructions": guest_runs.iter().map(|r| r.spans[k].instructions).collect::<Vec<_>>(),
            "wall_s": walls,
            "median_wall_s": wall,
            "mips": mips,
            "native_wall_s": native_walls,
            "native_median_wall_s": native,
            "slowdown_vs_native": ratio,
        }));
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let record = serde_json::json!({
        "date_utc": utc_date(now),
        "unix_time": now,
        "command": command,
        "wasm86": build_identity(),
        "git_commit": option_env!("WASM86_GIT_COMMIT").filter(|c| !c.is_empty()),
        "host_cpu": cpu,
        "host_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel.0.display().to_string(),
        "initrd": initrd.0.display().to_string(),
        "append": args.append,
        "memory_mib": args.memory,
        "script_args": script_args,
        "reps": reps,
        "boot": {
            "instructions": guest_runs.iter().map(|r| r.boot_instructions).collect::<Vec<_>>(),
            "wall_s": guest_runs.iter().map(|r| r.boot_wall).collect::<Vec<_>>(),
            "median_wall_s": boot_wall,
        },
        "guest_total_wall_s": guest_runs.iter().map(|r| r.total_wall).collect::<Vec<_>>(),
        "workloads": rows,
        "native_error": native_error,
        "deterministic": nondeterministic.is_empty(),
    });
    let dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("--out-dir {}: {e}", dir.display()))?;
    let path = dir.join(format!("native-{now}.json"));
    let text = serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    println!("saved {}", path.display());

    if !nondeterministic.is_empty() {
        return Err(format!(
            "instruction counts differ between runs of deterministic mode: {}",
            nondeterministic.join("; ")
        ));
    }
    if reps > 1 {
        println!("instruction counts identical in all {reps} runs (deterministic)");
    }
    Ok(())
}

/// The median (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    wasm86::machine::counters::group_digits(n)
}

/// The host CPU's model name from /proc/cpuinfo.
fn host_cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Unix seconds → "YYYY-MM-DDTHH:MM:SSZ" (proleptic Gregorian, UTC).
fn utc_date(secs: u64) -> String {
    let (y, m, d) = wasm86::dev::rtc::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn groups_digits_in_threes() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(312_345_678), "312,345,678");
    }

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(utc_date(951_825_599), "2000-02-29T11:59:59Z");
    }
}
