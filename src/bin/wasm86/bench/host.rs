//! The benchmark run natively on this host: /bench/run, the static i386 programs and busybox,
//! taken out of the benchmark initramfs, run by busybox sh with its workloads timed at the
//! same marker lines (an x86-64 Linux host runs i386 programs through its IA32 emulation).

use super::guest::MARKER;
use super::{cpio, Span};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The files the script needs, as initramfs path → file name in the scratch directory.
const FILES: [(&str, &str); 5] = [
    ("bin/busybox", "busybox"),
    ("bench/run", "run"),
    ("bench/isprime", "isprime"),
    ("bench/gen", "gen"),
    ("bench/true", "true"),
];

/// A scratch directory holding the host's copies (removed on drop).
pub struct HostFiles {
    dir: PathBuf,
}

impl HostFiles {
    /// Extract the files from the initramfs `image` (read from `path`).
    pub fn extract(path: &Path, image: &[u8]) -> Result<HostFiles, String> {
        let entries = cpio::read(image).map_err(|e| format!("initrd {}: {e}", path.display()))?;
        let dir = std::env::temp_dir().join(format!("wasm86-bench-{}", std::process::id()));
        let files = HostFiles { dir };
        std::fs::create_dir_all(files.dir.join("tmp"))
            .map_err(|e| format!("{}: {e}", files.dir.display()))?;
        for (inside, name) in FILES {
            let e = entries.iter().find(|e| e.name == inside).ok_or_else(|| {
                format!(
                    "initrd {}: no /{inside}: not the benchmark initramfs \
                         (images/bench-initramfs.cpio.gz)?",
                    path.display()
                )
            })?;
            let to = files.dir.join(name);
            std::fs::write(&to, &e.data).map_err(|e| format!("{}: {e}", to.display()))?;
            make_executable(&to, e.mode)?;
        }
        Ok(files)
    }

    /// Run the script once with `args`; the workloads' wall times between their markers.
    pub fn run_once(&self, args: &[String]) -> Result<Vec<Span>, String> {
        let busybox = self.dir.join("busybox");
        let mut child = Command::new(&busybox)
            .arg("sh")
            .arg(self.dir.join("run"))
            .args(args)
            .env("BENCH_DIR", &self.dir)
            .env("BENCH_TMP", self.dir.join("tmp"))
            .env("BENCH_BUSYBOX", &busybox)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", busybox.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut spans = Vec::new();
        let mut open: Option<(String, Instant)> = None;
        let mut done = false;
        let mut error = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            let at = Instant::now();
            let Some(marker) = line.strip_prefix(MARKER) else {
                continue;
            };
            let mut words = marker.split_whitespace();
            match (words.next(), words.next()) {
                (Some("begin"), Some(name)) => open = Some((name.to_string(), at)),
                (Some("end"), Some(name)) => {
                    if let Some((begun, t0)) = open.take().filter(|(b, _)| b == name) {
                        spans.push(Span {
                            name: begun,
                            instructions: 0,
                            wall: at.duration_since(t0).as_secs_f64(),
                        });
                    }
                }
                (Some("done"), _) => done = true,
                (Some("error"), _) => error = Some(marker.to_string()),
                _ => {}
            }
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(e) = error {
            return Err(format!("wrong result: {e}"));
        }
        if !done || !out.status.success() {
            return Err(format!(
                "busybox sh run exited with {} without finishing{}",
                out.status,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            ));
        }
        Ok(spans)
    }
}

impl Drop for HostFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(unix)]
fn make_executable(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode((mode & 0o777) | 0o500),
    )
    .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path, _mode: u32) -> Result<(), String> {
    Ok(())
}
