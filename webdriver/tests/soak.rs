//! A soak test of the page's memory: a busy guest left running for ten minutes (by default;
//! `WASM86_SOAK_MINUTES`) must not make the page's memory grow. Not part of `make test` (it
//! takes ten minutes): `make soak` runs it (after `make site build`).
//!
//! The guest streams a disk four times larger than the page's disk cache (`disk-cache=32`,
//! MiB) from a second server, reading it whole again and again (dropping its own page cache
//! in between, so every pass reads the disk), and lists its file systems onto the VGA text
//! screen, so every path that allocates runs: ranged fetches, the chunk cache and its
//! eviction, the serial and screen mirrors, the stats. Every 20 s it samples the worker's
//! wasm memory and disk cache (from `stats()`), the page's JavaScript memory
//! (`performance.measureUserAgentSpecificMemory()`, the page being cross-origin isolated) and
//! the resident memory of Chromium's renderer processes. After a warm-up of two minutes
//! (the cache fills to its cap in the first pass) the checks are:
//! - the disk cache never holds more than its cap;
//! - the wasm memory does not grow at all (it never shrinks: growth would be a leak in the
//!   core or the cache);
//! - the renderer processes' resident memory grows by at most [`RSS_GROWTH_BOUND`] and the
//!   page's JavaScript memory by at most [`JS_GROWTH_BOUND`], comparing the medians of the
//!   first and last quarters of the samples (single samples swing by tens of MiB with garbage
//!   collections and frames in flight; a leak moves the medians);
//! - every pass over the disk read the right bytes (its md5 is the file's), at least three.

use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasm86_webdriver::{boot_timeout, pids_with_arg, plain, run, Machine, Res, Server};

/// The streamed disk's size and the cache cap the page is given (MiB).
const DISK_MIB: usize = 128;
const CACHE_MIB: u64 = 32;
/// How often the memory is sampled.
const SAMPLE: Duration = Duration::from_secs(20);
/// Samples before this are the warm-up.
const WARM_UP: Duration = Duration::from_secs(120);
/// The most the renderer processes' resident memory may grow after the warm-up (medians of
/// the first and last quarters of the samples).
const RSS_GROWTH_BOUND: u64 = 48 << 20;
/// The most the page's JavaScript memory may grow after the warm-up.
const JS_GROWTH_BOUND: u64 = 16 << 20;

fn soak_time() -> Duration {
    let minutes = std::env::var("WASM86_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|m| *m >= 3.0)
        .unwrap_or(10.0);
    Duration::from_secs_f64(minutes * 60.0)
}

/// Deterministic pseudo-random bytes (xorshift64*): a disk nothing can compress or dedupe.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn md5_hex(path: &std::path::Path) -> Res<String> {
    let out = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .map_err(|e| format!("md5sum: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "md5sum printed nothing".to_string())
}

/// Resident bytes of every Chromium renderer process (the page's and its workers' memory
/// lives in them). Only one browser runs during this test.
fn renderer_rss() -> u64 {
    pids_with_arg("--type=renderer")
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib << 10)
        })
        .sum()
}

/// The page's memory as Chromium measures it (JavaScript heaps of the page and its workers,
/// with the buffers they hold), or None if the API is not there.
async fn measured_js_memory(m: &Machine) -> Res<Option<u64>> {
    let v = m
        .call(
            "if (!performance.measureUserAgentSpecificMemory) return null; \
             return Promise.race([performance.measureUserAgentSpecificMemory() \
             .then(r => r.bytes), new Promise(ok => setTimeout(() => ok(-1), 60000))]);",
            vec![],
        )
        .await?;
    Ok(v.as_f64().filter(|b| *b >= 0.0).map(|b| b as u64))
}

#[derive(Debug)]
struct Sample {
    at: Duration,
    wasm_memory: u64,
    disk_cache: u64,
    downloaded: u64,
    instructions: f64,
    js_memory: Option<u64>,
    rss: u64,
}

async fn sample(m: &Machine, t0: Instant) -> Res<Sample> {
    let stats = m.call("return m.stats();", vec![]).await?;
    let num = |k: &str| -> Res<f64> {
        stats
            .get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("stats() has no number `{k}`: {stats}"))
    };
    Ok(Sample {
        at: t0.elapsed(),
        wasm_memory: num("memoryBytes")? as u64,
        disk_cache: num("diskCacheBytes")? as u64,
        downloaded: num("downloadedBytes")? as u64,
        instructions: num("instructions")?,
        js_memory: measured_js_memory(m).await?,
        rss: renderer_rss(),
    })
}

/// The median of the last quarter of `values` less that of the first quarter: what a leak
/// makes grow, while a garbage collection or a frame in flight at one sample does not.
fn quarter_medians(values: &[u64]) -> (u64, u64) {
    let quarter = (values.len() / 4).max(1);
    let median = |part: &[u64]| {
        let mut v = part.to_vec();
        v.sort_unstable();
        v[v.len() / 2]
    };
    (
        median(&values[..quarter]),
        median(&values[values.len() - quarter..]),
    )
}

/// Fail if `values` (samples after the warm-up) grew by more than `bound` from their first
/// quarter to their last.
fn trend(what: &str, values: &[u64], bound: u64) -> Res<()> {
    let (early, late) = quarter_medians(values);
    let (lo, hi) = (
        values.iter().min().copied().unwrap_or(0),
        values.iter().max().copied().unwrap_or(0),
    );
    let growth = late as i64 - early as i64;
    println!(
        "{what}: median {:.1} MiB in the first quarter after the warm-up, {:.1} MiB in the last \
         ({:+.1} MiB, bound {:.0}); samples from {:.1} to {:.1} MiB",
        mib(early),
        mib(late),
        growth as f64 / (1u64 << 20) as f64,
        mib(bound),
        mib(lo),
        mib(hi)
    );
    if growth > bound as i64 {
        return Err(format!(
            "{what} grew by {:.1} MiB after the warm-up (bound {:.0} MiB)",
            growth as f64 / (1u64 << 20) as f64,
            mib(bound)
        ));
    }
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "ten minutes: run by `make soak`"]
async fn a_busy_page_runs_for_minutes_without_memory_growth() {
    run(|env| async move {
        let dir: PathBuf = std::env::temp_dir().join(format!("wasm86-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let disk = dir.join("soak.img");
        std::fs::write(&disk, noise(DISK_MIB << 20, 0x50a6)).map_err(|e| e.to_string())?;
        let want_md5 = md5_hex(&disk)?;
        // The disk comes from another origin (CORS), as a course page's images may.
        let disk_server = Server::start_at(&dir)?;
        // A kernel option, so that the bundled Linux boots (a drive alone boots the BIOS).
        let query = format!(
            "?hda={}soak.img&disk-cache={CACHE_MIB}\
             &append=console%3DttyS0%20console%3Dtty0%20nomodeset",
            disk_server.url()
        );
        env.goto(&query).await?;
        let m = env.index_machine();
        m.wait_for("the shell prompt", boot_timeout(), |s| {
            s.serial.contains("/ # ").then_some(())
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        m.send_serial(
            "(while :; do dd if=/dev/sda bs=65536 2>/dev/null | md5sum; \
             echo 3 >/proc/sys/vm/drop_caches; ls -lR / >/dev/tty0 2>&1; done) &\n",
        )
        .await?;
        let t0 = Instant::now();
        let total = soak_time();
        let mut samples = Vec::new();
        println!(
            "   t (s)  wasm MiB  cache MiB  fetched MiB  instructions  JS MiB  renderers RSS MiB"
        );
        while t0.elapsed() < total {
            tokio::time::sleep(SAMPLE).await;
            let s = sample(&m, t0).await?;
            println!(
                "{:8.0}  {:8.1}  {:9.1}  {:11.1}  {:12.3e}  {:>6}  {:8.1}",
                s.at.as_secs_f64(),
                mib(s.wasm_memory),
                mib(s.disk_cache),
                mib(s.downloaded),
                s.instructions,
                s.js_memory.map_or("-".into(), |b| format!("{:.1}", mib(b))),
                mib(s.rss)
            );
            if s.disk_cache > CACHE_MIB << 20 {
                return Err(format!(
                    "the disk cache holds {:.1} MiB, over its cap of {CACHE_MIB} MiB",
                    mib(s.disk_cache)
                ));
            }
            samples.push(s);
        }
        let snap = m.snapshot().await?;
        let serial = plain(&snap.serial);
        let sums: Vec<&str> = serial
            .lines()
            .filter_map(|l| l.trim().strip_suffix('-').map(str::trim))
            .filter(|l| l.len() == 32 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        let wrong: Vec<&&str> = sums.iter().filter(|s| **s != want_md5).collect();
        println!(
            "{} passes over the {DISK_MIB} MiB disk, {} wrong (want {want_md5})",
            sums.len(),
            wrong.len()
        );
        if sums.len() < 3 || !wrong.is_empty() {
            return Err(format!(
                "want at least 3 passes, all with md5 {want_md5}; got {sums:?}"
            ));
        }

        let warm: Vec<&Sample> = samples.iter().filter(|s| s.at >= WARM_UP).collect();
        if warm.len() < 8 {
            return Err(format!("{} samples after the warm-up: too few", warm.len()));
        }
        let (first, last) = (warm[0], warm[warm.len() - 1]);
        let wasm_growth = warm
            .iter()
            .map(|s| s.wasm_memory)
            .max()
            .unwrap_or(0)
            .saturating_sub(first.wasm_memory);
        println!(
            "after the warm-up ({:.0} s to {:.0} s): wasm memory {:.1} -> {:.1} MiB (grew {:.1}), \
             fetched {:.0} MiB",
            first.at.as_secs_f64(),
            last.at.as_secs_f64(),
            mib(first.wasm_memory),
            mib(last.wasm_memory),
            mib(wasm_growth),
            mib(last.downloaded)
        );
        if wasm_growth > 0 {
            return Err(format!(
                "the worker's wasm memory grew by {:.1} MiB after the warm-up",
                mib(wasm_growth)
            ));
        }
        let rss: Vec<u64> = warm.iter().map(|s| s.rss).collect();
        trend(
            "the renderer processes' resident memory",
            &rss,
            RSS_GROWTH_BOUND,
        )?;
        let js: Vec<u64> = warm.iter().filter_map(|s| s.js_memory).collect();
        if js.len() >= 8 {
            trend("the page's JavaScript memory", &js, JS_GROWTH_BOUND)?;
        } else {
            println!("performance.measureUserAgentSpecificMemory() gave too few figures");
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}
