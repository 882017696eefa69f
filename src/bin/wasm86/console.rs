//! `wasm86` without a subcommand: boot Linux directly with the serial console (COM1) on the
//! terminal, boot a disk, CD or floppy through the BIOS (a drive and no kernel options), or
//! resume a saved state (`--load-state`). Output of COM1 goes to stdout; stdin goes
//! to COM1 (the terminal in raw mode when stdin is a terminal: Ctrl-A then X quits, Ctrl-A S
//! saves the state to the `--save-state` file, Ctrl-A Ctrl-A sends a Ctrl-A).
//!
//! Exit codes: 0 when `--until` text appeared or the guest reset (unless `--keep-running`),
//! 1 on errors (a missing or bad kernel/initrd, bad options), 2 when `--timeout` ran out.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasm86::boot::linux;
use wasm86::machine::{
    BootOrder, Firmware, Machine, MachineConfig, ResetCause, Stop, TimeMode, DETERMINISTIC_EPOCH,
};
use wasm86::state::replay::Recording;

/// Options of the default command (boot Linux on the serial console).
#[derive(clap::Args, Debug, Clone)]
pub struct BootArgs {
    /// The bzImage to boot [default: the bundled images/bzImage].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The initrd (initramfs) to hand the kernel, or `none` [default: the bundled
    /// images/initramfs.cpio.gz when booting the bundled kernel and --append names no root=,
    /// none otherwise].
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line [default: console=ttyS0 earlyprintk=serial].
    #[arg(long, value_name = "TEXT")]
    pub append: Option<String>,
    /// Boot through the BIOS from these devices, in order: a (floppy), c (hard disk), d
    /// (CD-ROM), e.g. `dc` [default: cad]. Without --kernel, --initrd or --append, giving a
    /// drive (--hda, --cdrom, --fda) boots through the BIOS too.
    #[arg(long, value_name = "ORDER", conflicts_with_all = ["kernel", "initrd", "append"])]
    pub boot: Option<String>,
    /// The system BIOS ROM for a BIOS boot (up to 256 KiB; the CPU starts at its reset vector)
    /// [default: the bundled SeaBIOS, images/firmware/bios-256k.bin].
    #[arg(long, value_name = "PATH", conflicts_with_all = ["kernel", "initrd", "append"])]
    pub bios: Option<PathBuf>,
    /// The display's VGA BIOS for a BIOS boot, or `none` [default: the bundled SeaVGABIOS,
    /// images/firmware/vgabios-stdvga.bin].
    #[arg(long, value_name = "PATH", conflicts_with_all = ["kernel", "initrd", "append"])]
    pub vga_bios: Option<PathBuf>,
    /// Have the BIOS offer its boot menu: "Press ESC for boot menu." for MS milliseconds
    /// [default: 2500], then the devices to pick with a digit (shown when there is more than
    /// one to boot from). As QEMU's `-boot menu=on,splash-time=MS`.
    #[arg(long, value_name = "MS", num_args = 0..=1, default_missing_value = "2500",
          conflicts_with_all = ["kernel", "initrd", "append", "load_state"])]
    pub boot_menu: Option<u16>,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(2..=3072))]
    pub memory: u32,
    /// Exit 0 as soon as the serial output contains TEXT (exit 3 if the guest resets first).
    #[arg(long, value_name = "TEXT")]
    pub until: Option<String>,
    /// Exit 0 as soon as the VGA text screen shows TEXT (on one row; exit 3 if the guest resets
    /// first).
    #[arg(long, value_name = "TEXT")]
    pub until_screen: Option<String>,
    /// Exit 2 when this much wall time has passed.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Print `instructions=N virtual_ms=N wall_ms=N mips=X post=0xNN` (the last POST code) on
    /// stderr at exit (and, with disks streamed over HTTP, `bytes_fetched=N image_bytes=N
    /// requests=N ...`).
    #[arg(long)]
    pub stats: bool,
    /// Print the machine's event counters on stderr at exit: the sensitive and privileged
    /// instructions run (at CPL 0 and 3), exceptions, interrupts per IRQ line and vector, TLB
    /// misses and flushes, CR3 loads, mode switches, decoded blocks, and each device's port and
    /// MMIO accesses.
    #[arg(long)]
    pub counters: bool,
    /// Let virtual time follow the host clock (default: deterministic, a fixed time per
    /// instruction and idle time skipped).
    #[arg(long)]
    pub realtime: bool,
    /// On a guest reboot or triple fault, reboot the kernel instead of exiting.
    #[arg(long)]
    pub keep_running: bool,
    /// At exit, write the display (VGA text or graphics) as a PNG image to PATH.
    #[arg(long, value_name = "PATH")]
    pub screenshot: Option<PathBuf>,
    /// At exit, print the VGA text-mode screen on stdout.
    #[arg(long)]
    pub screen_text: bool,
    /// Write what the guest sends to the debug console (ports 0xE9 and 0x402, where firmware
    /// prints its log) to PATH.
    #[arg(long, value_name = "PATH")]
    pub debugcon: Option<PathBuf>,
    /// Disk image for the primary IDE master (Linux: /dev/sda): a file, or an
    /// http://host:port/path URL streamed with Range requests (only the parts the guest reads
    /// are fetched). Opened read-only: the guest's writes go to an in-memory overlay and are
    /// dropped at exit unless --write-back is given.
    #[arg(long, value_name = "PATH|URL")]
    pub hda: Option<PathBuf>,
    /// Disk image for the primary IDE slave (Linux: /dev/sdb): a file or an http:// URL.
    #[arg(long, value_name = "PATH|URL")]
    pub hdb: Option<PathBuf>,
    /// ISO image for the CD-ROM drive, secondary IDE master (Linux: /dev/sr0): a file or an
    /// http:// URL.
    #[arg(long, value_name = "PATH|URL")]
    pub cdrom: Option<PathBuf>,
    /// Floppy image for drive A: (360 KB, 720 KB, 1.2 MB, 1.44 MB or 2.88 MB; a file). Opened
    /// read-only like the disks. The bundled Linux has no floppy driver: a BIOS uses it.
    #[arg(long, value_name = "PATH")]
    pub fda: Option<PathBuf>,
    /// The most MiB of a streamed (http://) image kept in memory, per image: beyond it the
    /// least recently read chunks are dropped and fetched again if the guest reads them
    /// again. Raised, if smaller, to the few MiB one read and its read-ahead need.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_DISK_CACHE_MIB,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub disk_cache_mib: u64,
    /// At exit, write the guest's changes into the --hda/--hdb image files (modifies them; not
    /// for URLs).
    #[arg(long)]
    pub write_back: bool,
    /// Write the whole machine's state to PATH when the run ends (at --until, at --timeout, on
    /// Ctrl-A X) and whenever Ctrl-A S is typed in the console. Disk images are not in it:
    /// the guest's changes to them are.
    #[arg(long, value_name = "PATH")]
    pub save_state: Option<PathBuf>,
    /// Resume the machine saved in PATH instead of booting a kernel. Give the same --hda,
    /// --hdb and --cdrom images as when it was saved (they are checked); --memory and the
    /// kernel options do not apply.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["kernel", "initrd"])]
    pub load_state: Option<PathBuf>,
    /// Record the run into PATH: the machine as it starts and everything given to it (serial
    /// input, how far each slice ran, the host clock in real time, when streamed disk data
    /// arrived and which reads had to wait for it), so that --replay PATH repeats it exactly.
    /// Not with --keep-running (a reboot loads the kernel again, which a replay cannot).
    #[arg(long, value_name = "PATH", conflicts_with = "keep_running")]
    pub record: Option<PathBuf>,
    /// Replay the run recorded in PATH (give the same --hda, --hdb and --cdrom images, as files
    /// even if they were URLs; no kernel is needed): prints the same serial output and says whether the run came out the same,
    /// or at which instruction it diverged (exit 1).
    #[arg(long, value_name = "PATH",
          conflicts_with_all = ["kernel", "initrd", "load_state", "record", "until", "keep_running"])]
    pub replay: Option<PathBuf>,
}

/// The default kernel command line.
/// `--disk-cache-mib`'s default: the core's (sized for a page, ample for the bundled images).
const DEFAULT_DISK_CACHE_MIB: u64 = wasm86::block::DEFAULT_MAX_CACHED_BYTES >> 20;

pub const DEFAULT_APPEND: &str = "console=ttyS0 earlyprintk=serial";

/// Where the bundled guest lives (the crate's images/ directory, fixed at build time).
pub(crate) fn bundled(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name)
}

/// Instructions per run slice: small enough to keep the console responsive.
const SLICE: u64 = 2_000_000;
/// Slice in real-time mode and with streamed disks: the host clock is read and the disks'
/// fetches are made between slices, so they are short.
const STREAM_SLICE: u64 = 100_000;

pub(crate) fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The terminal in raw mode (through `stty`, so no unsafe code); restored on drop.
struct RawTerminal {
    saved: String,
}

impl RawTerminal {
    fn enable() -> Option<RawTerminal> {
        let out = Command::new("stty")
            .arg("-g")
            .stdin(Stdio::inherit())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let saved = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ok = Command::new("stty")
            .args(["raw", "-echo"])
            .stdin(Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = Command::new("stty")
            .arg(&self.saved)
            .stdin(Stdio::inherit())
            .status();
    }
}

/// Read stdin on a thread, byte chunks into a channel (closed at end of input).
fn spawn_stdin() -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Finds `needle` in a stream that arrives in pieces.
pub(crate) struct Watch {
    needle: Vec<u8>,
    tail: Vec<u8>,
}

impl Watch {
    pub(crate) fn new(needle: &str) -> Watch {
        Watch {
            needle: needle.as_bytes().to_vec(),
            tail: Vec::new(),
        }
    }

    /// The next piece of the stream; true if `needle` has appeared (it may span pieces).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        if self.needle.is_empty() {
            return true;
        }
        self.tail.extend_from_slice(bytes);
        let found = self
            .tail
            .windows(self.needle.len())
            .any(|w| w == self.needle);
        let keep = self.needle.len() - 1;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        found
    }
}

/// Load the kernel (and initrd) into a (re)started machine.
pub(crate) fn boot(
    machine: &mut Machine,
    kernel: &(PathBuf, Vec<u8>),
    initrd: &Option<(PathBuf, Vec<u8>)>,
    append: &str,
) -> Result<(), String> {
    linux::load(
        &mut machine.cpu,
        &kernel.1,
        initrd.as_ref().map(|(_, d)| d.as_slice()),
        append,
    )
    .map_err(|e| match e {
        linux::LoadError::InitrdTooLarge { .. } => match initrd {
            Some((p, _)) => format!("initrd {}: {e}", p.display()),
            None => e.to_string(),
        },
        _ => format!("kernel {}: {e}", kernel.0.display()),
    })?;
    Ok(())
}

enum Outcome {
    Until,
    Timeout,
    Reset(ResetCause),
    Quit,
}

/// The machine the CLI boots: `memory_mib` of RAM, deterministic time unless `realtime`.
pub(crate) fn machine_config(memory_mib: u32, realtime: bool) -> MachineConfig {
    let rtc = if realtime {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(DETERMINISTIC_EPOCH)
    } else {
        DETERMINISTIC_EPOCH
    };
    MachineConfig {
        ram_bytes: memory_mib as usize * 1024 * 1024,
        time_mode: if realtime {
            TimeMode::Realtime
        } else {
            TimeMode::Deterministic
        },
        rtc_unix_seconds: rtc,
        fast_serial: true,
        // Real time: the host clock pulls virtual time forward after every slice; within a
        // slice time advances at a nominal 500 MIPS, faster than the interpreter runs, so the
        // guest is never throttled below the host's speed (at 10 ns it would be held to 100).
        ns_per_instruction: if realtime { 2 } else { 10 },
        firmware: None,
    }
}

/// The drives the options name (`--hda`, `--hdb`, `--cdrom`, `--fda`), streamed ones keeping
/// at most `--disk-cache-mib` each.
fn open_drives(
    args: &BootArgs,
) -> Result<(crate::remote::Remotes, Vec<crate::disk::Image>), String> {
    crate::disk::open(
        &args.hda,
        &args.hdb,
        &args.cdrom,
        &args.fda,
        args.disk_cache_mib << 20,
    )
}

/// `--replay PATH`: run the recorded run again and check that it comes out the same.
fn replay(args: &BootArgs, path: &Path) -> Result<ExitCode, String> {
    let wall_start = Instant::now();
    let what = |e: &dyn std::fmt::Display| format!("--replay {}: {e}", path.display());
    let file = read_file("--replay", path)?;
    let rec = Recording::from_bytes(&file).map_err(|e| what(&e))?;
    let (remotes, images) = open_drives(args)?;
    if !remotes.is_empty() {
        // A replay gives the recorded answers where the image had no data at once; everywhere
        // else the image must have it, as a file does.
        return Err(what(
            &"give the disks as image files (a run recorded from URLs replays from their \
              downloaded images)",
        ));
    }
    let mode = if rec.realtime {
        TimeMode::Realtime
    } else {
        TimeMode::Deterministic
    };
    let disks = images.into_iter().map(|i| (i.slot, i.backend)).collect();
    let mut machine = Machine::restore_state(&rec.start, mode, disks)
        .map_err(|e| what(&format!("its starting state: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    machine
        .replay(&rec, |out| {
            let _ = stdout.write_all(out);
        })
        .map_err(|e| what(&e))?;
    let _ = stdout.flush();
    drop(stdout);
    let end = machine.cpu.instructions;
    if args.screen_text {
        crate::screen::print_text(&machine);
    }
    if let Some(p) = &args.screenshot {
        crate::screen::write_png(&machine, p)?;
    }
    eprintln!(
        "wasm86: replayed {} events: {end} instructions and {} bytes of output, the same as \
         recorded ({} ms)",
        rec.events.len(),
        rec.output_len,
        wall_start.elapsed().as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

/// The machine saved in `path`, with the images given again.
fn resume(
    path: &Path,
    realtime: bool,
    stats: bool,
    images: Vec<crate::disk::Image>,
) -> Result<Machine, String> {
    let t0 = Instant::now();
    let file = read_file("--load-state", path)?;
    let mode = if realtime {
        TimeMode::Realtime
    } else {
        TimeMode::Deterministic
    };
    let names: Vec<(usize, String)> = images
        .iter()
        .map(|i| (i.slot, i.path.display().to_string()))
        .collect();
    let disks = images.into_iter().map(|i| (i.slot, i.backend)).collect();
    let mut m = Machine::restore_state(&file, mode, disks)
        .map_err(|e| format!("--load-state {}: {e}", path.display()))?;
    for (slot, name) in names {
        m.set_disk_name(slot, &name);
    }
    if stats {
        eprintln!(
            "wasm86: restored {} ({} bytes) in {:.0} ms",
            path.display(),
            file.len(),
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(m)
}

/// Write the machine's state to `path` (through a temporary file beside it, so an interrupted
/// save never leaves half a state under the name).
fn save(machine: &mut Machine, path: &Path) -> Result<String, String> {
    let t0 = Instant::now();
    let state = machine.save_state();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &state)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("--save-state {}: {e}", path.display()))?;
    Ok(format!(
        "state saved to {} ({} bytes, at instruction {}, in {ms:.0} ms)",
        path.display(),
        state.len(),
        machine.cpu.instructions
    ))
}

/// The firmware to boot through, if the options ask for a BIOS boot: --boot, --bios or
/// --vga-bios, or a drive with no kernel option (and no saved state to resume).
fn firmware(args: &BootArgs) -> Result<Option<Firmware>, String> {
    let kernel_options = args.kernel.is_some() || args.initrd.is_some() || args.append.is_some();
    let drive =
        args.hda.is_some() || args.hdb.is_some() || args.cdrom.is_some() || args.fda.is_some();
    let asked = args.boot.is_some()
        || args.bios.is_some()
        || args.vga_bios.is_some()
        || args.boot_menu.is_some();
    if args.load_state.is_some() || !(asked || drive && !kernel_options) {
        return Ok(None);
    }
    if !asked {
        eprintln!(
            "wasm86: booting the drives through the BIOS (a kernel option, such as --append, \
             boots the bundled Linux with them attached instead)\r"
        );
    }
    let order = match &args.boot {
        Some(letters) => BootOrder::parse(letters).map_err(|e| format!("--boot {letters}: {e}"))?,
        None => BootOrder::parse("cad").expect("a valid order"),
    };
    let read = |what: &str, given: &Option<PathBuf>, bundled_name: &str| {
        let path = given.clone().unwrap_or_else(|| bundled(bundled_name));
        read_file(what, &path).map_err(|e| match given {
            Some(_) => e,
            None => format!("{e} (the bundled firmware comes with the repository's images/)"),
        })
    };
    let bios = read("BIOS", &args.bios, "firmware/bios-256k.bin")?;
    let vga_bios = match &args.vga_bios {
        Some(p) if p.as_os_str() == "none" => None,
        given => Some(read("VGA BIOS", given, "firmware/vgabios-stdvga.bin")?),
    };
    Firmware::new(bios, vga_bios, order)
        .map(Some)
        .map_err(|e| format!("firmware: {e}"))
}

/// Run the default command.
pub fn run(args: &BootArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("wasm86: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &BootArgs) -> Result<ExitCode, String> {
    if let Some(path) = &args.replay {
        return replay(args, path);
    }
    let wall_start = Instant::now();
    if args.write_back {
        for (what, path) in [("--hda", &args.hda), ("--hdb", &args.hdb)] {
            if let Some(url) = path.as_deref().and_then(crate::disk::url_of) {
                return Err(format!(
                    "--write-back: {what} {url} is a URL; only image files can be written back"
                ));
            }
        }
    }
    if let Some(t) = args.timeout {
        if !(t.is_finite() && t >= 0.0) {
            return Err(format!("--timeout {t}: not a number of seconds"));
        }
    }
    let (mut machine, mut remotes, direct) = build_machine(args)?;

    let interactive = std::io::stdin().is_terminal();
    let _raw = if interactive {
        RawTerminal::enable()
    } else {
        None
    };
    let input = spawn_stdin();
    let mut input_open = true;
    let mut pending: std::collections::VecDeque<u8> = Default::default();
    let mut ctrl_a = false;
    let mut watch = args.until.as_deref().map(Watch::new);
    let deadline = args
        .timeout
        .map(|t| wall_start + Duration::from_secs_f64(t.min(1e9)));
    let run_start = Instant::now();
    // Real time: the host clock as virtual time, going on from the machine's own (a resumed
    // machine is not made to wait until the host catches up with its saved time).
    let time_base = machine.now();
    let host_now = || time_base + run_start.elapsed().as_nanos() as u64;
    // Real time reads the host clock once per slice: short slices keep virtual time close to
    // it (a busy guest would otherwise fall behind and lose timer ticks, as the browser host
    // found), and so do streamed disks, whose fetches happen between slices.
    let slice = if remotes.is_empty() && !args.realtime {
        SLICE
    } else {
        STREAM_SLICE
    };
    let mut stdout = std::io::stdout().lock();
    if args.record.is_some() {
        machine.start_recording();
    }
    let mut debugcon = match &args.debugcon {
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|e| format!("--debugcon {}: {e}", path.display()))?,
        ),
        None => None,
    };

    let outcome = 'run: loop {
        let stop = if args.realtime {
            machine.run_realtime(host_now(), slice)
        } else {
            machine.run(slice)
        };
        // Streamed disks: fetch what the drives asked for during the slice.
        remotes.service(&mut machine, deadline);
        if let Some(file) = debugcon.as_mut() {
            let out = machine.debug_output();
            if !out.is_empty() {
                file.write_all(&out)
                    .map_err(|e| format!("--debugcon: {e}"))?;
            }
        }
        let out = machine.serial_output(0);
        if !out.is_empty() {
            // Raw mode turns off the terminal's LF → CRLF; the guest's tty already sends CRLF.
            let _ = stdout.write_all(&out);
            let _ = stdout.flush();
            if watch.as_mut().is_some_and(|w| w.push(&out)) {
                break 'run Outcome::Until;
            }
        }
        if let Some(text) = &args.until_screen {
            let shown = machine.board().vga.borrow().screen_text();
            if shown.iter().any(|row| row.contains(text.as_str())) {
                break 'run Outcome::Until;
            }
        }
        if let Stop::Reset(cause) = stop {
            if !args.keep_running {
                break 'run Outcome::Reset(cause);
            }
            eprintln!("\r\nwasm86: guest reset ({cause:?}); booting again\r");
            if let Some(d) = &direct {
                boot(&mut machine, &d.kernel, &d.initrd, &d.append)?;
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break 'run Outcome::Timeout;
        }

        // Input: take what stdin has (waiting briefly when the guest is idle).
        let idle_wait = match stop {
            Stop::Idle { next_deadline } if args.realtime => {
                let host = host_now();
                let until = next_deadline.unwrap_or(host + 10_000_000);
                Some(Duration::from_nanos(
                    until.saturating_sub(host).min(10_000_000),
                ))
            }
            Stop::Idle { .. } => Some(Duration::from_millis(2)),
            Stop::Budget if args.realtime => {
                let host = host_now();
                let ahead = (machine.now() + machine.forgiven_ns()).saturating_sub(host);
                (ahead > 1_000_000).then(|| Duration::from_nanos(ahead.min(10_000_000)))
            }
            _ => None,
        };
        if input_open {
            let got = match idle_wait {
                Some(d) if pending.is_empty() => input.recv_timeout(d),
                _ => input.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
            };
            match got {
                Ok(bytes) => {
                    for b in bytes {
                        if interactive && ctrl_a {
                            ctrl_a = false;
                            match b {
                                b'x' | b'X' => break 'run Outcome::Quit,
                                b's' | b'S' => match &args.save_state {
                                    Some(path) => match save(&mut machine, path) {
                                        Ok(msg) => eprint!("\r\nwasm86: {msg}\r\n"),
                                        Err(e) => eprint!("\r\nwasm86: {e}\r\n"),
                                    },
                                    None => {
                                        eprint!("\r\nwasm86: no --save-state PATH was given\r\n")
                                    }
                                },
                                0x01 => pending.push_back(b),
                                _ => {}
                            }
                        } else if interactive && b == 0x01 {
                            ctrl_a = true;
                        } else {
                            pending.push_back(b);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => input_open = false,
            }
        } else if let Some(d) = idle_wait {
            std::thread::sleep(d);
        }
        while let Some(&b) = pending.front() {
            if !machine.serial_input(0, b) {
                break;
            }
            pending.pop_front();
        }
    };
    drop(stdout);
    drop(_raw);

    if let Some(path) = &args.save_state {
        let msg = save(&mut machine, path)?;
        eprintln!("wasm86: {msg}");
    }
    if let (Some(rec), Some(path)) = (machine.take_recording(), &args.record) {
        let events = rec.events.len();
        let file = rec.to_bytes();
        std::fs::write(path, &file).map_err(|e| format!("--record {}: {e}", path.display()))?;
        eprintln!(
            "wasm86: recorded {events} events ({} bytes) to {}",
            file.len(),
            path.display()
        );
    }

    if args.screen_text {
        crate::screen::print_text(&machine);
    }
    if let Some(path) = &args.screenshot {
        crate::screen::write_png(&machine, path)?;
    }

    if args.write_back {
        for (slot, path) in [(0, &args.hda), (1, &args.hdb)] {
            if let Some(p) = path {
                let n = crate::disk::write_back(&machine, slot, p)?;
                eprintln!("wasm86: wrote {n} changed sectors back to {}", p.display());
            }
        }
    }
    if args.counters {
        eprint!("{}", machine.counters().to_text());
    }
    if args.stats {
        let wall = wall_start.elapsed();
        let instr = machine.cpu.instructions;
        let secs = run_start.elapsed().as_secs_f64().max(1e-9);
        let post = machine.board().post.borrow().last;
        eprintln!(
            "instructions={instr} virtual_ms={} wall_ms={} mips={:.1} post={post:#04x}",
            machine.now() / 1_000_000,
            wall.as_millis(),
            instr as f64 / secs / 1e6
        );
        if !remotes.is_empty() {
            let t = remotes.totals();
            eprintln!(
                "bytes_fetched={} image_bytes={} requests={} http_requests={} retries={} \
                 failed_requests={} cached_bytes={} evicted_bytes={}",
                t.stream.bytes_fetched,
                t.stream.image_size,
                t.stream.requests,
                t.http_requests,
                t.stream.retries,
                t.stream.failed_requests,
                t.stream.cached_bytes,
                t.stream.evicted_bytes
            );
        }
    }
    Ok(match outcome {
        Outcome::Until | Outcome::Quit => ExitCode::SUCCESS,
        Outcome::Timeout => {
            eprintln!(
                "\r\nwasm86: timeout after {:.1} s\r",
                args.timeout.unwrap_or(0.0)
            );
            ExitCode::from(2)
        }
        Outcome::Reset(cause) => {
            let what = match cause {
                ResetCause::TripleFault => "triple fault",
                ResetCause::Guest => "reboot",
            };
            eprintln!(
                "\r\nwasm86: the guest asked for a {what}; exiting (--keep-running reboots)\r"
            );
            // A run that waited for a text and never saw it did not do what was asked.
            let waited = [&args.until, &args.until_screen]
                .into_iter()
                .flatten()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>();
            if waited.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "wasm86: {} did not appear before it\r",
                    waited.join(" and ")
                );
                ExitCode::from(3)
            }
        }
    })
}

/// The machine the boot options describe, built and not yet run: the kernel (bundled or
/// `--kernel`) loaded for a direct boot, the CPU at the BIOS's reset vector for a BIOS boot, or
/// the `--load-state` machine resumed; the drives attached (those streamed over HTTP served by
/// the returned `Remotes`). The same choices as `run_inner`'s, which could use it; for
/// `wasm86 trace`, which boots as the default command does.
/// A direct Linux boot's kernel, initrd and command line: loaded at power-on, and again after a
/// reset with `--keep-running`.
pub(crate) struct DirectBoot {
    pub kernel: (PathBuf, Vec<u8>),
    pub initrd: Option<(PathBuf, Vec<u8>)>,
    pub append: String,
}

/// The machine the boot options describe, its streamed disks, and the direct boot to repeat
/// after a reset (none for a BIOS boot or a resumed state without `--keep-running`).
pub(crate) fn build_machine(
    args: &BootArgs,
) -> Result<(Machine, crate::remote::Remotes, Option<DirectBoot>), String> {
    let firmware = firmware(args)?;
    let append = args.append.as_deref().unwrap_or(DEFAULT_APPEND);
    let kernel_path = args.kernel.clone().unwrap_or_else(|| bundled("bzImage"));
    // The bundled initramfs is a whole userland that never mounts another root: a command line
    // that names one (root=/dev/sda) boots without it unless --initrd asks for it.
    let names_root = append.split_whitespace().any(|w| w.starts_with("root="));
    let initrd_path = match (&args.initrd, &args.kernel) {
        (Some(p), _) if p.as_os_str() == "none" => None,
        (Some(p), _) => Some(p.clone()),
        (None, None) if !names_root => Some(bundled("initramfs.cpio.gz")),
        (None, _) => None,
    };
    let hint = if args.kernel.is_none() {
        " (the bundled guest is built by images/build.sh)"
    } else {
        ""
    };
    // A resumed machine needs a kernel only to boot again after a reset (--keep-running).
    let needs_kernel = (args.load_state.is_none() || args.keep_running) && firmware.is_none();
    let direct = if needs_kernel {
        let kernel = read_file("kernel", &kernel_path).map_err(|e| format!("{e}{hint}"))?;
        let initrd = match initrd_path {
            Some(p) => {
                let bytes = read_file("initrd", &p).map_err(|e| format!("{e}{hint}"))?;
                Some((p, bytes))
            }
            None => None,
        };
        Some(DirectBoot {
            kernel: (kernel_path, kernel),
            initrd,
            append: append.to_string(),
        })
    } else {
        None
    };
    let (remotes, images) = open_drives(args)?;
    let machine = match (&args.load_state, &direct) {
        (Some(path), _) => resume(path, args.realtime, args.stats, images)?,
        (None, Some(d)) => {
            let mut m = Machine::new(machine_config(args.memory, args.realtime));
            crate::disk::attach(&mut m, images)?;
            boot(&mut m, &d.kernel, &d.initrd, &d.append)?;
            m
        }
        (None, None) => {
            // Through the BIOS: the CPU starts at its reset vector.
            let mut m = Machine::new(MachineConfig {
                firmware: firmware.clone(),
                ..machine_config(args.memory, args.realtime)
            });
            if let Some(wait_ms) = args.boot_menu {
                m.set_boot_menu(wait_ms);
            }
            crate::disk::attach(&mut m, images)?;
            m
        }
    };
    Ok((machine, remotes, direct))
}
