//! Disks streamed over HTTP by the CLI: `wasm86 serve` on a temporary directory holding a 64 MiB
//! disk image (images/disk.img grown at test time), and the bundled kernel booting with
//! `root=/dev/sda` from `--hda http://127.0.0.1:PORT/big.img`. Checks that only what the guest
//! reads is fetched, that the streamed bytes are right, that the served file stays
//! byte-identical, the fallback for a server without `Range`, and a server that dies mid-run
//! (the guest gets I/O errors, the CLI neither hangs nor panics).
//!
//! Run with `cargo test --release --test streaming -- --nocapture` to see the numbers.

mod common;

use common::{md5_hex, run_cli, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Size of the served image.
const IMAGE_SIZE: u64 = 64 << 20;
/// A file of pseudo-random bytes put into the image's file system (when e2fsprogs is there),
/// so the image is full of data the boot does not need.
const FILLER_SIZE: usize = 40 << 20;

fn bundled(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name)
}

/// Deterministic pseudo-random bytes (xorshift64*).
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

fn tool(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A temporary directory with `big.img`: images/disk.img (the ext2 root file system) grown to
/// 64 MiB. With e2fsprogs the file system is grown to fill it and gets a 40 MiB file of noise
/// (/data/filler.bin); without, the space after the file system is filled with noise. Returns
/// the directory, the image bytes, and the filler when it is in the file system.
fn big_image(tag: &str) -> (PathBuf, Vec<u8>, Option<Vec<u8>>) {
    let dir = std::env::temp_dir().join(format!("wasm86-streaming-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("big.img");
    let base = std::fs::read(bundled("disk.img"))
        .expect("images/disk.img missing; images/build-disk.sh builds it");
    let mut bytes = base.clone();
    bytes.resize(IMAGE_SIZE as usize, 0);
    std::fs::write(&img, &bytes).unwrap();

    let filler = noise(FILLER_SIZE, 0x7761_736d_3836);
    let filler_path = dir.join("filler.bin");
    std::fs::write(&filler_path, &filler).unwrap();
    let grown = tool(Command::new("resize2fs").arg("-f").arg(&img).arg("64M"))
        && tool(
            Command::new("debugfs")
                .arg("-w")
                .arg("-R")
                .arg(format!("write {} /data/filler.bin", filler_path.display()))
                .arg(&img),
        )
        && tool(Command::new("e2fsck").arg("-fn").arg(&img));
    std::fs::remove_file(&filler_path).unwrap();
    if grown {
        println!("big.img: the ext2 file system grown to 64 MiB, with a 40 MiB /data/filler.bin");
        (dir, std::fs::read(&img).unwrap(), Some(filler))
    } else {
        println!("big.img: no e2fsprogs; 4 MiB file system followed by 60 MiB of noise");
        let tail = noise(IMAGE_SIZE as usize - base.len(), 0x5eed);
        bytes[base.len()..].copy_from_slice(&tail);
        std::fs::write(&img, &bytes).unwrap();
        (dir, bytes, None)
    }
}

/// `key=N` from the `--stats` output.
fn stat(stderr: &str, key: &str) -> u64 {
    stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in the stats:\n{stderr}"))
}

/// Boot the bundled kernel with the streamed image as root and run `commands` from its
/// userland (more CLI options in `extra`); the CLI's success, stdout and stderr.
fn boot_from(url: &str, commands: &str, extra: &[&str]) -> (bool, String, String) {
    let kernel = bundled("bzImage");
    let hda = format!("{url}big.img");
    let mut args = vec![
        "--kernel",
        kernel.to_str().unwrap(),
        "--append",
        "console=ttyS0 root=/dev/sda rw",
        "--hda",
        &hda,
        "--until",
        "DONE42",
        "--timeout",
        "600",
        "--stats",
    ];
    args.extend_from_slice(extra);
    run_cli(
        &args,
        "/ # ",
        || {},
        &format!("{commands}; echo DONE$((6*7))\n"),
    )
}

#[test]
fn boots_from_a_streamed_disk_fetching_only_what_it_reads() {
    let (dir, image, filler) = big_image("range");
    let server = Server::start(&dir, &[]);
    // Raw blocks far into the image, and (when it is there) the start of the filler file: both
    // must arrive intact through the chunked fetches.
    let (skip, count) = (700u64, 16u64); // 64 KiB blocks: 1 MiB at 43.75 MiB
    let raw = &image[(skip * 65536) as usize..((skip + count) * 65536) as usize];
    let mut commands = format!(
        "cat /hello.txt; busybox | head -n 1; grep ' / ' /proc/mounts; \
         dd if=/dev/sda bs=65536 skip={skip} count={count} 2>/dev/null | md5sum"
    );
    if filler.is_some() {
        commands.push_str("; head -c 262144 /data/filler.bin | md5sum");
    }
    // Recorded: the fetches' timing is the host's, so the drive's late answers go into the
    // recording, and a replay from the image file prints the same.
    let rec = dir.join("streamed.rec");
    let (ok, out, err) = boot_from(&server.url, &commands, &["--record", rec.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("wasm86 disk root is up"), "{out}");
    assert!(out.contains("hello from the wasm86 disk"), "{out}");
    assert!(out.contains("BusyBox v"), "{out}");
    assert!(out.contains("/dev/root / ext2 rw"), "{out}");
    assert!(out.contains(&md5_hex(raw)), "raw blocks differ:\n{out}");
    if let Some(f) = &filler {
        assert!(
            out.contains(&md5_hex(&f[..262_144])),
            "filler differs:\n{out}"
        );
    }

    let fetched = stat(&err, "bytes_fetched");
    let size = stat(&err, "image_bytes");
    println!(
        "streamed boot (root=/dev/sda, a few commands): bytes_fetched={fetched} image_bytes={size} \
         ({:.1} %), requests={} http_requests={}",
        fetched as f64 * 100.0 / size as f64,
        stat(&err, "requests"),
        stat(&err, "http_requests")
    );
    assert_eq!(size, IMAGE_SIZE);
    assert!(
        fetched > 0 && fetched * 4 < size,
        "fetched {fetched} of {size} bytes"
    );
    assert_eq!(stat(&err, "failed_requests"), 0, "{err}");
    assert!(
        std::fs::read(dir.join("big.img")).unwrap() == image,
        "the served image changed"
    );
    let recording = wasm86::state::replay::Recording::from_bytes(&std::fs::read(&rec).unwrap())
        .expect("a recording");
    assert!(
        !recording.disk_answers.is_empty(),
        "no late answers recorded"
    );
    let file = dir.join("big.img");
    let replay = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args([
            "--replay",
            rec.to_str().unwrap(),
            "--hda",
            file.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let replay_err = String::from_utf8_lossy(&replay.stderr);
    assert!(
        replay.status.success() && replay_err.contains("the same as recorded"),
        "{replay_err}"
    );
    // The recording began at power-on, so the replay prints all the run printed.
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout),
        out,
        "the replay printed something else"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_without_range_support_gets_a_whole_download_and_a_warning() {
    let (dir, image, _) = big_image("norange");
    let server = Server::start(&dir, &["--no-range"]);
    let (ok, out, err) = boot_from(&server.url, "cat /hello.txt", &[]);
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("the server ignores Range requests; downloading the whole image (64.0 MiB)"),
        "{err}"
    );
    assert!(out.contains("hello from the wasm86 disk"), "{out}");
    let fetched = stat(&err, "bytes_fetched");
    println!("server without Range: bytes_fetched={fetched} image_bytes={IMAGE_SIZE}");
    assert_eq!(fetched, IMAGE_SIZE);
    assert_eq!(stat(&err, "http_requests"), 1, "{err}");
    assert!(
        std::fs::read(dir.join("big.img")).unwrap() == image,
        "the served image changed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_that_dies_gives_the_guest_io_errors_and_the_cli_carries_on() {
    let (dir, _, _) = big_image("dies");
    let mut server = Server::start(&dir, &[]);
    let hda = format!("{}big.img", server.url);
    // Boot the initramfs (the streamed disk is a second disk here); once the shell is up, the
    // server goes away, then the guest reads blocks nobody fetched yet.
    let (ok, out, err) = run_cli(
        &[
            "--append",
            "console=ttyS0",
            "--hda",
            &hda,
            "--until",
            "DONE42",
            "--timeout",
            "600",
            "--stats",
        ],
        "/ # ",
        || server.kill(),
        "dd if=/dev/sda of=/dev/null bs=4096 count=1 skip=12000; echo RC=$?; \
         dmesg | grep 'I/O error, dev sda' | tail -n 1; echo DONE$((6*7))\n",
    );
    println!(
        "server killed: failed_requests={} retries={}",
        stat(&err, "failed_requests"),
        stat(&err, "retries")
    );
    assert!(
        ok,
        "the CLI did not finish the guest's command:\n{out}\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.contains("Input/output error") && out.contains("RC=1"),
        "{out}"
    );
    assert!(out.contains("I/O error, dev sda"), "{out}");
    assert!(
        err.contains("giving up: the guest gets a read error"),
        "{err}"
    );
    assert!(stat(&err, "failed_requests") >= 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_disk_larger_than_its_cache_reads_whole_twice_within_the_cap() {
    let (dir, image, _) = big_image("cache");
    let server = Server::start(&dir, &[]);
    let hda = format!("{}big.img", server.url);
    const CAP_MIB: u64 = 24;
    let cap = CAP_MIB << 20;
    // The streamed image is a second disk here (the initramfs is the root): the guest reads
    // all of it, drops its own page cache, and reads it all again.
    let read_all = "dd if=/dev/sda bs=1048576 2>/dev/null | md5sum";
    let (ok, out, err) = run_cli(
        &[
            "--append",
            "console=ttyS0",
            "--hda",
            &hda,
            "--disk-cache-mib",
            &CAP_MIB.to_string(),
            "--until",
            "DONE42",
            "--timeout",
            "900",
            "--stats",
        ],
        "/ # ",
        || {},
        &format!(
            "{read_all}; sync; echo 3 > /proc/sys/vm/drop_caches; {read_all}; echo DONE$((6*7))\n"
        ),
    );
    assert!(ok, "{out}\n{err}");
    let md5 = md5_hex(&image);
    assert_eq!(
        out.matches(&md5).count(),
        2,
        "both reads whole and right:\n{out}"
    );
    let (fetched, cached, evicted) = (
        stat(&err, "bytes_fetched"),
        stat(&err, "cached_bytes"),
        stat(&err, "evicted_bytes"),
    );
    println!(
        "64 MiB streamed twice through a {CAP_MIB} MiB cache: bytes_fetched={fetched} \
         cached_bytes={cached} evicted_bytes={evicted}"
    );
    assert!(cached <= cap, "cached {cached} bytes, cap {cap}");
    // What the cache could not keep was fetched again for the second read.
    assert!(fetched >= 2 * IMAGE_SIZE - cap, "fetched {fetched}");
    assert!(evicted >= IMAGE_SIZE, "evicted {evicted}");
    assert_eq!(stat(&err, "failed_requests"), 0, "{err}");
    assert!(
        std::fs::read(dir.join("big.img")).unwrap() == image,
        "the served image changed"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(["--hda", &hda, "--disk-cache-mib", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--disk-cache-mib"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_urls_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("wasm86-streaming-{}-bad", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("odd.img"), vec![1u8; 1000]).unwrap();
    std::fs::write(dir.join("empty.img"), b"").unwrap();
    let server = Server::start(&dir, &[]);
    let u = &server.url;
    // A port nothing listens on: bind one, note it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (url, needle) in [
        (format!("{u}missing.img"), "HTTP 404 Not Found".to_string()),
        (format!("{u}odd.img"), "not a multiple of 512".to_string()),
        (format!("{u}empty.img"), "the image is empty".to_string()),
        (
            "https://127.0.0.1/disk.img".to_string(),
            "https is not supported".to_string(),
        ),
        (
            "ftp://h/disk.img".to_string(),
            "unsupported URL scheme".to_string(),
        ),
        (
            format!("http://{dead}/disk.img"),
            "cannot connect".to_string(),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
            .args(["--hda", &url, "--timeout", "30"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}");
        assert!(
            err.contains(&format!("--hda {url}")) && err.contains(&needle),
            "{url}: {err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(["--hda", &format!("{u}odd.img"), "--write-back"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only image files can be written back"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
