//! `Machine`: the PC for the page, in real-time mode. The page calls `run()` in slices with its
//! clock and yields to the event loop between them (for input events and disk fetches).

use super::disk::{into_backend, stream_config, Disk};
use super::http::{Feed, Messages};
use crate::boot::linux;
use crate::dev::atapi::Cdrom;
use crate::dev::fdc::Diskette;
use crate::dev::ide::{AtaDisk, Drive};
use crate::input::HostInput;
use crate::keymap;
use crate::machine::{BootOrder, Firmware, Machine as Core, MachineConfig, Stop, TimeMode};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// Guest RAM limits in MiB (the CLI's too).
const MIN_MEMORY_MIB: f64 = 2.0;
const MAX_MEMORY_MIB: f64 = 3072.0;
/// The IDE position of the CD-ROM drive (secondary master, /dev/sr0).
const CDROM_SLOT: usize = 2;
/// The guest runs in slices of at most this many instructions (about a millisecond), for two
/// reasons. Real time: the machine reads the host clock once per slice and steers its clock's
/// rate by it ([`crate::machine::Machine::run_realtime`]), so short slices keep virtual time
/// close to the host's. Input: queued keys and serial bytes are handed over between slices,
/// soon after the guest took the last ones.
const SLICE: u64 = 50_000;
/// Virtual nanoseconds per instruction at the start: 500 MIPS, faster than the interpreter
/// runs, so the guest is not throttled while the machine's rate control finds the host's speed.
const NS_PER_INSTRUCTION: u64 = 2;

/// What `load_linux` was given, kept to boot again after a reset.
struct Kernel {
    image: Vec<u8>,
    initrd: Option<Vec<u8>>,
    append: String,
}

/// A disk that was attached, for the download counter and the fetches.
struct Attached {
    /// Bytes of a whole download (a server without Range); a streamed disk counts in its feed.
    downloaded: u64,
    feed: Option<Rc<Feed>>,
}

/// A PC: CPU, RAM, the PC devices, two hard disk positions and a CD-ROM drive.
#[wasm_bindgen]
pub struct Machine {
    pub(super) core: Core,
    input: HostInput,
    kernel: Option<Kernel>,
    disks: Vec<Attached>,
    messages: Messages,
    /// The host time of the first `run()`, in ms: virtual time counts from there.
    epoch_ms: Option<f64>,
    /// The inspector's breakpoints (see inspect.rs), and whether the next run steps off the
    /// instruction at EIP without checking it (the one a breakpoint or a step stopped at).
    pub(super) breakpoints: crate::machine::inspect::Breakpoints,
    pub(super) skip_breakpoint_once: bool,
}

fn error(msg: impl AsRef<str>) -> JsError {
    JsError::new(msg.as_ref())
}

#[wasm_bindgen]
impl Machine {
    /// A machine with `memory_mib` MiB of RAM (2 to 3072) in real-time mode, its clock (RTC)
    /// set from the host's. Throws if the size is out of range or the browser cannot give the
    /// tab that much memory.
    #[wasm_bindgen(constructor)]
    pub fn new(memory_mib: f64) -> Result<Machine, JsError> {
        Machine::build(memory_mib, None)
    }

    /// A machine that boots through firmware, as a PC does: `bios` is the system BIOS ROM (at
    /// most 256 KiB; the CPU starts at its reset vector), `vga_bios` the display's VGA BIOS
    /// (undefined: none), `boot_order` the drives to try (letters a: floppy, c: hard disk, d:
    /// CD-ROM, e.g. "cad"). Attach the drives next; there is no kernel to load. Throws on a bad
    /// ROM, boot order or memory size.
    pub fn with_firmware(
        memory_mib: f64,
        bios: Vec<u8>,
        vga_bios: Option<Vec<u8>>,
        boot_order: &str,
    ) -> Result<Machine, JsError> {
        let order =
            BootOrder::parse(boot_order).map_err(|e| error(format!("boot {boot_order}: {e}")))?;
        let firmware =
            Firmware::new(bios, vga_bios, order).map_err(|e| error(format!("firmware: {e}")))?;
        Machine::build(memory_mib, Some(firmware))
    }

    /// Have the BIOS offer its boot menu ("Press ESC for boot menu.") for `wait_ms`
    /// milliseconds, before the machine first runs.
    pub fn set_boot_menu(&mut self, wait_ms: u16) {
        self.core.set_boot_menu(wait_ms);
    }

    /// Put `disk` into floppy drive A: (360 KB to 2.88 MB, sized from the image), replacing the
    /// diskette that was there. Consumes the disk. Throws on an image of no floppy size.
    pub fn insert_floppy(&mut self, disk: Disk) -> Result<(), JsError> {
        let (name, downloaded, warning) = (
            disk.name.clone(),
            disk.whole_download(),
            disk.warning.clone(),
        );
        let (backend, stream) = into_backend(disk.source);
        let diskette =
            Diskette::new(backend, false).map_err(|e| error(format!("fda {name}: {e}")))?;
        self.core.insert_floppy(0, Some(diskette));
        self.register("fda", downloaded, stream, warning);
        Ok(())
    }
}

impl Machine {
    /// A machine with `memory_mib` MiB of RAM in real-time mode, booting through `firmware` if
    /// any (see [`Machine::new`]).
    fn build(memory_mib: f64, firmware: Option<Firmware>) -> Result<Machine, JsError> {
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) || memory_mib.fract() != 0.0 {
            let why = if memory_mib.fract() != 0.0 || memory_mib.is_nan() {
                "is not a whole number of MiB"
            } else if memory_mib < MIN_MEMORY_MIB {
                "is too little"
            } else {
                "is too much"
            };
            return Err(error(format!(
                "memory: {memory_mib} MiB {why}: give a whole number of MiB from \
                 {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}"
            )));
        }
        let ram_bytes = memory_mib as usize * 1024 * 1024;
        // Allocation failure would abort the module, so ask first, for the RAM and some room
        // for the CPU's and memory's own tables; the allocator keeps the memory for the machine.
        // (One allocation is limited to 2 GiB - 1 on wasm32, so 2048 MiB and more never fit.)
        let (mut ram, mut room): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
        if ram.try_reserve_exact(ram_bytes).is_err() || room.try_reserve_exact(64 << 20).is_err() {
            return Err(error(format!(
                "memory: the browser cannot give this page {memory_mib} MiB for the guest's RAM \
                 (at most 2047 MiB, often less); try less"
            )));
        }
        drop((ram, room));
        let mut core = Core::new(MachineConfig {
            ram_bytes,
            ns_per_instruction: NS_PER_INSTRUCTION,
            time_mode: TimeMode::Realtime,
            rtc_unix_seconds: (js_sys::Date::now() / 1000.0) as i64,
            fast_serial: true,
            firmware,
        });
        // The CD-ROM drive is always there, so a disc can be inserted later.
        core.attach_drive(CDROM_SLOT, Drive::Atapi(Cdrom::empty()));
        Ok(Machine::with_core(core))
    }
}

#[wasm_bindgen]
impl Machine {
    /// Turn the compiling tier on (a block is compiled once it has started `threshold` times;
    /// 1 is the most eager) or off (0). Throws if this browser cannot compile WebAssembly at
    /// run time.
    pub fn set_jit(&mut self, threshold: u32) -> Result<(), JsError> {
        let engine: Option<Box<dyn crate::jit::Engine>> = if threshold == 0 {
            None
        } else {
            let engine = super::jit::BrowserEngine::new()
                .map_err(|e| error(format!("compiling tier: {e}")))?;
            Some(Box::new(engine))
        };
        self.core.cpu.set_jit(engine, threshold);
        Ok(())
    }

    /// The compiling tier's counters: `{regionsCompiled, regionsLive, guestBytes, wasmBytes,
    /// compiledInstructions, entries, inlineInstructions, stepInstructions, failures, compileMs,
    /// error}` (counts as numbers; `compileMs` is the time spent compiling and instantiating
    /// modules, in ms; `error` is why the tier turned itself off, or null).
    pub fn jit_stats(&self) -> JsValue {
        let s = self.core.cpu.jit_stats();
        let o = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = js_sys::Reflect::set(&o, &k.into(), &v);
        };
        set("regionsCompiled", (s.regions_compiled as f64).into());
        set("regionsLive", (s.regions_live as f64).into());
        set("guestBytes", (s.guest_bytes as f64).into());
        set("wasmBytes", (s.wasm_bytes as f64).into());
        set(
            "compiledInstructions",
            (s.compiled_instructions as f64).into(),
        );
        set("entries", (s.entries as f64).into());
        set("inlineInstructions", (s.inline_instructions as f64).into());
        set("stepInstructions", (s.step_instructions as f64).into());
        set("failures", (s.failures as f64).into());
        set(
            "compileMs",
            self.core
                .cpu
                .jit_compile_ms()
                .map(JsValue::from)
                .unwrap_or(JsValue::NULL),
        );
        set(
            "error",
            self.core
                .cpu
                .jit_error()
                .map(JsValue::from)
                .unwrap_or(JsValue::NULL),
        );
        o.into()
    }

    /// A machine from a state file (saved by `save_state` here or by the CLI's `--save-state`),
    /// in real-time mode, with the images its drives had given again (each is checked against
    /// the one it was saved with). Throws with a message naming what is wrong: not a state
    /// file, truncated, corrupt, from a newer wasm86, a missing or different disk image.
    #[wasm_bindgen(js_name = fromState)]
    pub fn from_state(
        state: &[u8],
        hda: Option<Disk>,
        hdb: Option<Disk>,
        cdrom: Option<Disk>,
    ) -> Result<Machine, JsError> {
        let mut given = Vec::new();
        let mut registered = Vec::new();
        for (slot, label, disk) in [
            (0, "hda", hda),
            (1, "hdb", hdb),
            (CDROM_SLOT, "cdrom", cdrom),
        ] {
            if let Some(disk) = disk {
                let (downloaded, warning) = (disk.whole_download(), disk.warning.clone());
                let name = disk.name.clone();
                let (backend, stream) = into_backend(disk.source);
                given.push((slot, backend));
                registered.push((slot, label, name, downloaded, stream, warning));
            }
        }
        // The caller says which file it was.
        let core = Core::restore_state(state, TimeMode::Realtime, given)
            .map_err(|e| error(e.to_string()))?;
        let mut m = Machine::with_core(core);
        for (slot, label, name, downloaded, stream, warning) in registered {
            m.core.set_disk_name(slot, &name);
            m.register(label, downloaded, stream, warning);
        }
        Ok(m)
    }

    /// The event counters since the last `reset_counters` (or power-on), as JSON:
    /// `{instructions, groups: [{title, columns: [..], rows: [{name, values: [..]}]}]}`
    /// (see `crate::machine::counters`).
    pub fn counters(&self) -> String {
        serde_json::to_string(&self.core.counters()).unwrap_or_default()
    }

    /// Zero the event counters.
    pub fn reset_counters(&mut self) {
        self.core.reset_counters();
    }

    /// The whole machine as a state file (see `fromState`; the CLI's `--load-state` reads it
    /// too). Disk images are not in it, the guest's changes to them are.
    pub fn save_state(&mut self) -> Vec<u8> {
        self.core.save_state()
    }

    /// Start recording the run from here: the machine as it is now and everything the page
    /// gives it from now on (keys, mouse, serial bytes, the clock readings, when streamed disk
    /// data arrived), so that `wasm86 --replay FILE` (with the disks as files) repeats it
    /// exactly. A recording already running is dropped.
    pub fn start_recording(&mut self) {
        self.core.start_recording();
    }

    /// Whether a recording runs (it ends by itself when the machine reboots or a disc changes:
    /// a replay could not load the kernel or the disc again).
    pub fn is_recording(&self) -> bool {
        self.core.is_recording()
    }

    /// The recording since `start_recording` as a file (ended now if it still runs), or
    /// undefined if none was started.
    pub fn stop_recording(&mut self) -> Option<Vec<u8>> {
        self.core.take_recording().map(|r| r.to_bytes())
    }

    /// The kernel a restored machine boots when it is reset or the guest reboots (a machine
    /// started with `load_linux` has one already). Nothing is loaded now.
    pub fn set_kernel(
        &mut self,
        kernel: Vec<u8>,
        initrd: Option<Vec<u8>>,
        append: String,
    ) -> Result<(), JsError> {
        self.kernel = Some(Kernel::checked(kernel, initrd, append)?);
        Ok(())
    }

    /// Load a Linux bzImage, an optional initrd and the kernel command line, and start the
    /// kernel (the machine is reset first). Throws with a plain message if the kernel is not a
    /// bzImage (the machine is then left as it was), does not fit in RAM, and so on.
    pub fn load_linux(
        &mut self,
        kernel: Vec<u8>,
        initrd: Option<Vec<u8>>,
        append: String,
    ) -> Result<(), JsError> {
        let k = Kernel::checked(kernel, initrd, append)?;
        self.core.reset();
        self.input.clear();
        self.kernel = None;
        boot(&mut self.core, &k).map_err(error)?;
        self.kernel = Some(k);
        Ok(())
    }

    /// Attach `disk` as hard disk `slot` (0 = hda, /dev/sda; 1 = hdb, /dev/sdb), replacing what
    /// was there. Consumes the disk. Throws on a bad slot or an image that is not a whole number
    /// of 512-byte sectors.
    pub fn attach_disk(&mut self, slot: u32, disk: Disk) -> Result<(), JsError> {
        let label = match slot {
            0 => "hda",
            1 => "hdb",
            _ => {
                return Err(error(format!(
                    "attach_disk: there is no hard disk position {slot} (0 = hda, 1 = hdb)"
                )))
            }
        };
        let (name, downloaded, warning) = (
            disk.name.clone(),
            disk.whole_download(),
            disk.warning.clone(),
        );
        let (backend, stream) = into_backend(disk.source);
        let ata = AtaDisk::new(backend).map_err(|e| error(format!("{label} {name}: {e}")))?;
        self.core.attach_drive(slot as usize, Drive::Ata(ata));
        self.register(label, downloaded, stream, warning);
        Ok(())
    }

    /// Put `disk` into the CD-ROM drive (secondary master, /dev/sr0), replacing the disc that
    /// was there. Consumes the disk. Throws if the image is empty.
    pub fn insert_cdrom(&mut self, disk: Disk) -> Result<(), JsError> {
        if disk.size() == 0.0 {
            return Err(error(format!("cdrom {}: the image is empty", disk.name)));
        }
        let (downloaded, warning) = (disk.whole_download(), disk.warning.clone());
        let (backend, stream) = into_backend(disk.source);
        let recording = self.core.is_recording();
        if !self.core.insert_cdrom(CDROM_SLOT, backend) {
            return Err(error("cdrom: the machine has no CD-ROM drive"));
        }
        if recording {
            self.message("recording: a disc was inserted, so the recording ends there");
        }
        self.register("cdrom", downloaded, stream, warning);
        Ok(())
    }

    /// Run the machine for a real-time slice: `host_now_ms` is the host clock in milliseconds
    /// (`performance.now()`; virtual time counts from the first call), `max_instructions` the
    /// most to execute. Returns "budget" (the budget is used or the guest is ahead of the
    /// clock: call again after yielding), "idle" (the guest waits for time or input), or
    /// "reset" (the guest rebooted or triple-faulted; the kernel was booted again); while
    /// inspector breakpoints are set, also "breakpoint" (stopped before the instruction one
    /// names; see `breakpoint_hit`).
    pub fn run(&mut self, host_now_ms: f64, max_instructions: f64) -> String {
        // Virtual time goes on from where it is (0 for a new machine; a restored one resumes at
        // its saved time).
        let core = &self.core;
        let epoch = *self
            .epoch_ms
            .get_or_insert_with(|| host_now_ms - core.now() as f64 / 1e6);
        // `as` saturates (NaN and negatives become 0), so any number is a valid input.
        let host_ns = ((host_now_ms - epoch) * 1e6) as u64;
        let budget = max_instructions as u64;
        let end = self.core.cpu.instructions.saturating_add(budget);
        self.wake_storage();
        self.input.pump(&mut self.core);
        if !self.breakpoints.is_empty() {
            let why = self.run_to_breakpoints(host_ns, budget);
            self.input.pump(&mut self.core);
            self.start_fetches();
            return why.into();
        }
        let stop = loop {
            let start = self.core.cpu.instructions;
            let remaining = end.saturating_sub(start);
            let slice = remaining.min(SLICE);
            let stop = self.core.run_realtime(host_ns, slice);
            let used = self.core.cpu.instructions.saturating_sub(start);
            let fed = self.input.pump(&mut self.core);
            let more = self.core.cpu.instructions < end
                && match stop {
                    // The slice ran out (not the time): go on.
                    Stop::Budget => used >= slice,
                    // Input just arrived: let the guest take it now.
                    Stop::Idle { .. } => fed,
                    Stop::Reset(_) => false,
                };
            if !more {
                break stop;
            }
        };
        self.start_fetches();
        match stop {
            Stop::Budget => "budget",
            Stop::Idle { .. } => "idle",
            Stop::Reset(_) => {
                self.reboot();
                "reset"
            }
        }
        .to_string()
    }

    /// Bring the displayed frame up to date; true if it may have changed.
    pub fn render(&mut self) -> bool {
        let now = self.core.now();
        let board = self.core.board();
        let mut vga = board.vga.borrow_mut();
        vga.show_frame_at(now);
        vga.render()
    }

    /// Width of the frame in pixels.
    pub fn width(&self) -> u32 {
        self.core.board().vga.borrow().width() as u32
    }

    /// Height of the frame in pixels.
    pub fn height(&self) -> u32 {
        self.core.board().vga.borrow().height() as u32
    }

    /// The frame as `width * height * 4` RGBA bytes (a copy).
    pub fn framebuffer(&self) -> Vec<u8> {
        self.core.board().vga.borrow().framebuffer().to_vec()
    }

    /// The VGA text screen, rows joined by "\n" (trailing blanks trimmed); "" in graphics modes.
    pub fn screen_text(&self) -> String {
        self.core.board().vga.borrow().screen_text().join("\n")
    }

    /// What the guest wrote to COM1 since the last call.
    pub fn serial_output(&mut self) -> Vec<u8> {
        self.core.serial_output(0)
    }

    /// Queue bytes for COM1; they are fed as the UART takes them.
    pub fn send_serial(&mut self, bytes: &[u8]) {
        let dropped = self.input.send_serial(bytes);
        if dropped > 0 {
            self.message(format!(
                "serial: the input queue is full; {dropped} bytes were dropped"
            ));
        }
    }

    /// A key of the PS/2 keyboard, named by `KeyboardEvent.code`, goes down or up. Returns false
    /// for codes of keys a PC keyboard does not have. Queued behind earlier keys and typed text.
    pub fn key(&mut self, code: &str, pressed: bool) -> bool {
        if keymap::scancode(code).is_none() {
            return false;
        }
        if !self.input.key(code, pressed) {
            self.message("keyboard: the input queue is full; a key was dropped");
        }
        true
    }

    /// Type `text` on the PS/2 keyboard (US layout; "\n" is Enter; control characters are
    /// Ctrl+letter). Characters no key types are skipped (and reported by take_messages).
    pub fn type_text(&mut self, text: &str) {
        let skipped = self.input.type_text(text);
        if skipped > 0 {
            self.message(format!(
                "type_text: {skipped} characters were skipped (no key types them on a US \
                 keyboard, or the input queue is full)"
            ));
        }
    }

    /// Move the PS/2 mouse by `dx` (right) and `dy` (down) counts and the wheel by `dz` notches
    /// (down), with `buttons` held: the bits of `MouseEvent.buttons` (1 left, 2 right, 4 middle,
    /// 8 back, 16 forward).
    pub fn mouse(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.core.mouse_move(dx, dy, dz, buttons);
    }

    /// Reset the machine (as the reset button) and boot the loaded kernel again. Disks stay;
    /// queued input is dropped.
    pub fn reset(&mut self) {
        self.core.reset();
        self.reboot();
    }

    /// Instructions retired since power-on.
    pub fn instructions(&self) -> f64 {
        self.core.cpu.instructions as f64
    }

    /// Bytes fetched over HTTP by the attached disks.
    pub fn downloaded_bytes(&self) -> f64 {
        self.disks
            .iter()
            .map(|d| {
                d.downloaded
                    + d.feed
                        .as_ref()
                        .map_or(0, |f| f.stream.stats().bytes_fetched)
            })
            .sum::<u64>() as f64
    }

    /// Bytes of streamed disks' chunks held in memory now (each disk's at most its cache cap,
    /// `Disk.open_url`'s `max_cache_mib`).
    pub fn cached_disk_bytes(&self) -> f64 {
        self.disks
            .iter()
            .filter_map(|d| d.feed.as_ref())
            .map(|f| f.stream.stats().cached_bytes)
            .sum::<u64>() as f64
    }

    /// Warnings and errors for the page since the last call.
    pub fn take_messages(&mut self) -> Vec<String> {
        std::mem::take(&mut *self.messages.borrow_mut())
    }
}

impl Kernel {
    /// A kernel to boot, if `image` is a bzImage.
    fn checked(image: Vec<u8>, initrd: Option<Vec<u8>>, append: String) -> Result<Kernel, JsError> {
        linux::parse_header(&image).map_err(|e| error(format!("kernel: {e}")))?;
        Ok(Kernel {
            image,
            initrd,
            append,
        })
    }
}

/// Rust-side access for tests and other Rust hosts (not exported to JavaScript).
impl Machine {
    /// A machine around `core`, with no kernel, disks or input yet.
    fn with_core(core: Core) -> Machine {
        Machine {
            core,
            input: HostInput::default(),
            kernel: None,
            disks: Vec::new(),
            messages: Messages::default(),
            epoch_ms: None,
            breakpoints: Default::default(),
            skip_breakpoint_once: false,
        }
    }

    /// The emulated PC.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The emulated PC, mutably (tests load programs into RAM through this).
    pub fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    fn message(&self, msg: impl Into<String>) {
        self.messages.borrow_mut().push(msg.into());
    }

    /// Keep track of an attached disk; a streamed one gets a feed that fetches its chunks.
    fn register(
        &mut self,
        label: &'static str,
        downloaded: u64,
        stream: Option<(crate::block::Stream, String)>,
        warning: Option<String>,
    ) {
        if let Some(w) = warning {
            self.message(w);
        }
        let feed = stream.map(|(stream, url)| {
            Rc::new(Feed {
                label,
                url,
                stream,
                max_attempts: stream_config().max_attempts,
                messages: Rc::clone(&self.messages),
            })
        });
        self.disks.push(Attached { downloaded, feed });
    }

    /// Data arrived (or a fetch was given up) since the last slice: drives retry their reads.
    fn wake_storage(&mut self) {
        let mut wake = false;
        for f in self.disks.iter().filter_map(|d| d.feed.as_ref()) {
            wake |= f.stream.take_wake();
        }
        if wake {
            self.core.storage_wake();
        }
    }

    /// Fetch what the drives asked for during the slice (the fetches run after `run()`
    /// returns, when the page yields).
    fn start_fetches(&self) {
        for f in self.disks.iter().filter_map(|d| d.feed.as_ref()) {
            f.start();
        }
    }

    /// After a reset: drop queued input and boot the kernel again (a machine with firmware
    /// boots itself: its BIOS runs again).
    pub(super) fn reboot(&mut self) {
        self.input.clear();
        if self.core.board().firmware().is_some() {
            return;
        }
        if self.core.is_recording() {
            // Loading the kernel into RAM is not something a replay can do.
            self.core.end_recording();
            self.message("recording: the machine rebooted, so the recording ends there");
        }
        match &self.kernel {
            Some(k) => {
                if let Err(e) = boot(&mut self.core, k) {
                    self.message(format!("reset: booting the kernel again failed: {e}"));
                }
            }
            None => self.message(
                "reset: this machine was restored from a state and has no kernel to boot (yet)",
            ),
        }
    }
}

/// Load the kernel into a machine that was just reset.
fn boot(core: &mut Core, k: &Kernel) -> Result<(), String> {
    linux::load(&mut core.cpu, &k.image, k.initrd.as_deref(), &k.append)
        .map(|_| ())
        .map_err(|e| match e {
            linux::LoadError::InitrdTooLarge { .. } => format!("initrd: {e}"),
            _ => format!("kernel: {e}"),
        })
}
