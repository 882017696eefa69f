//! The board: the CPU with its RAM, the PC devices on the port and MMIO buses, virtual time and
//! the run loop.
//!
//! # Ownership
//!
//! The CPU owns its bus as a `Box<dyn Bus>` (so the core never knows which devices exist), yet
//! the machine must reach the same devices between instruction slices: to advance timers, feed
//! serial input and collect output. The devices therefore live in one [`Board`] shared as
//! `Rc<RefCell<Board>>`: the CPU holds a thin [`BoardBus`] wrapper, the machine holds the other
//! handle. Both run on one thread and never overlap (the CPU touches the board only inside
//! `Cpu::run`, the machine only between runs), so a `RefCell` borrow never fails; its cost is
//! one flag check per port access, which is negligible next to a device access. Inside the
//! board each device is shared the same way between the bus ranges it answers at and the
//! board's typed handle on it (see [`crate::dev::bus`]).
//!
//! # Memory map
//!
//! Guest RAM is plain RAM except the VGA's legacy window 0xA0000-0xBFFFF and its linear
//! framebuffer (PCI BAR0 of the display function, [`vga::LFB_DEFAULT`] at reset), which are
//! ranges of the MMIO bus served by [`Vga`], and MMIO pages in the CPU's page map. When the guest
//! moves BAR0, the board moves the range on the bus and hands the change to the CPU with the
//! access that moved it ([`crate::bus::Bus::take_mmio_changes`]), so the next instruction
//! already sees the new map. There is no BIOS (Linux is booted directly, see [`crate::boot`]),
//! so 0xC0000-0xFFFFF is RAM. The e820 map the loader hands Linux marks 0x9FC00-0xFFFFF
//! reserved, so the kernel leaves it alone.
//!
//! # Time
//!
//! Virtual time is in nanoseconds. It is derived from the CPU's retired-instruction count: a
//! fixed number of nanoseconds per instruction ([`MachineConfig::ns_per_instruction`]). The run
//! loop executes the CPU until the nearest device deadline, advances the devices whose deadline
//! passed, feeds the IRQ lines to the PIC and loops. When the CPU halts with interrupts enabled,
//! deterministic mode skips virtual time forward to the next deadline; real-time mode returns
//! to the host so it can sleep, and the host's clock pulls virtual time forward at the next call
//! ([`Machine::run_realtime`]). Nothing here reads a clock: the host passes time in.

pub mod counters;
mod firmware;
pub mod inspect;
mod record;
mod snapshot;

pub use counters::{CounterGroup, CounterRow, CounterTable};
pub use firmware::{BootDevice, BootOrder, BootOrderError, Firmware};

use crate::block::{BlockBackend, Overlay};
use crate::bus::{Bus, MapTo, MmioChange};
use crate::cpu::{flags, Cpu, RunExit};
use crate::dev::bus::{shared, DeviceBus, MapError, Shared};
use crate::dev::debugcon::{self, DebugConsole};
use crate::dev::dma::{self, Dma};
use crate::dev::fdc::{self, Diskette, Fdc};
use crate::dev::fw_cfg::{self, FwCfg};
use crate::dev::ide::{self, Drive, Ide};
use crate::dev::pci::{self, PciBus};
use crate::dev::pic::PicPair;
use crate::dev::pit::{Pit, PORT_B};
use crate::dev::ps2::I8042;
use crate::dev::rom::{self, Rom};
use crate::dev::rtc::Rtc;
use crate::dev::sysctl::{CoprocessorLatch, PortA, PostCode};
use crate::dev::uart::Uart;
use crate::dev::vga::{self, Vga};
use crate::dev::{all_ones, BoardSignals, DevCtx, Device, IrqLines, Nanos, Snapshot, Timed};
use crate::mem::PageKind;
use crate::state::replay::{Event, Recorder, Recording};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;

/// COM1: base port and ISA IRQ.
pub const COM1_BASE: u16 = 0x3F8;
pub const COM1_IRQ: u8 = 4;
/// COM2: base port and ISA IRQ.
pub const COM2_BASE: u16 = 0x2F8;
pub const COM2_IRQ: u8 = 3;
/// Ports of the devices that are not self-describing.
const PIT_BASE: u16 = 0x40;
const I8042_DATA: u16 = 0x60;
const I8042_CMD: u16 = 0x64;
const RTC_BASE: u16 = 0x70;
const POST_PORT: u16 = 0x80;
const PORT_A: u16 = 0x92;
const COPROCESSOR_PORT: u16 = 0xF0;
const PCI_BASE: u16 = 0xCF8;

/// The fixed wall-clock time the RTC shows in deterministic mode: 2024-01-01 00:00:00 UTC.
pub const DETERMINISTIC_EPOCH: i64 = 1_704_067_200;

/// The most instructions one CPU slice runs when no device deadline is nearer, so the host
/// regains control regularly.
const MAX_SLICE: u64 = 1_000_000;
/// In real-time mode, how far virtual time may run ahead of the host clock before the machine
/// returns so the host can wait.
const REALTIME_LEAD_NS: Nanos = 10_000_000;
/// In real-time mode, the most lag that is caught up (deadline by deadline while the guest
/// idles, by a slower clock rate while it computes); more is forgiven (see
/// [`Machine::run_realtime`]). Seconds, not less: code with interrupts off holds the clock back
/// (see [`Machine::hurry_while_a_request_waits`]), and the guest's next idle moment catches
/// that up, which a lag forgiven would not.
pub const MAX_CATCH_UP_NS: Nanos = 5_000_000_000;
/// Real time: the shortest host interval over which the host's speed is measured.
const RATE_SAMPLE_NS: Nanos = 2_000_000;
/// Real time: the lag that doubles the clock's rate per instruction at the next sample (see
/// [`Machine::adapt_rate`]).
const RATE_WINDOW_NS: Nanos = 100_000_000;
/// Real time: bounds of the clock's rate (1000 to 5 virtual MIPS).
const MIN_PS_PER_INSTRUCTION: u64 = 1_000;
const MAX_PS_PER_INSTRUCTION: u64 = 200_000;
/// Virtual nanoseconds per TSC tick: a 100 MHz time-stamp counter.
pub const TSC_NS: Nanos = 10;
/// Deterministic mode: idle time skipped with no instruction executed before a run returns to
/// the host (see `Machine::run_inner`).
pub const MAX_IDLE_SKIP_NS: Nanos = 100_000_000;

/// Deterministic mode: how much idle virtual time one call of [`Machine::run`] skips at most.
/// A guest that waits with interrupts on runs a few instructions per timer tick, so without a
/// bound one call could skip minutes of virtual time (a BIOS's "No bootable device", a boot
/// loader's countdown) before the host looks at the screen or the serial line again.
pub const MAX_IDLE_SKIP_PER_RUN_NS: Nanos = 50_000_000;
/// Bound on the device service passes at one instant (the PIT asks for a second pass to make a
/// missed IRQ0 edge; nothing needs more than a few).
const MAX_SERVICE_PASSES: usize = 8;

/// How virtual time relates to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeMode {
    /// Virtual time advances only with retired instructions (and skips over idle time):
    /// the same inputs give the same run.
    Deterministic,
    /// Virtual time follows the host clock passed to [`Machine::run_realtime`].
    Realtime,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// Guest RAM in bytes.
    pub ram_bytes: usize,
    /// Virtual nanoseconds per retired instruction (10 = a 100 MIPS virtual CPU).
    pub ns_per_instruction: u64,
    /// Deterministic or real time.
    pub time_mode: TimeMode,
    /// The time the RTC shows at reset, in seconds since 1970 (UTC). Deterministic runs use
    /// [`DETERMINISTIC_EPOCH`]; a real-time host passes its own clock.
    pub rtc_unix_seconds: i64,
    /// UART transmissions reach the host at once instead of at the programmed baud rate.
    pub fast_serial: bool,
    /// The BIOS the machine boots through; none: the host boots it (a Linux kernel loaded
    /// directly).
    pub firmware: Option<Firmware>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ram_bytes: 128 << 20,
            ns_per_instruction: 10,
            time_mode: TimeMode::Deterministic,
            rtc_unix_seconds: DETERMINISTIC_EPOCH,
            fast_serial: true,
            firmware: None,
        }
    }
}

/// Converts the CPU's retired-instruction count into virtual nanoseconds:
/// `base_ns + (instructions - base_instructions) * ps_per_instruction / 1000`. Skipping idle time
/// moves the base forward; in real-time mode the rate follows the host (see
/// [`Machine::run_realtime`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Clock {
    base_ns: Nanos,
    base_instructions: u64,
    /// Virtual picoseconds per instruction.
    ps_per_instruction: u64,
}

impl Clock {
    fn at(&self, instructions: u64) -> Nanos {
        let run = instructions.saturating_sub(self.base_instructions);
        // Every port and MMIO access asks. Two factors below 2^32 multiply in u64 without
        // overflow: no overflow check, which wasm32 has no instruction for (`checked_mul` there
        // is a 128-bit multiply, a library call through the stack). Otherwise stay in u64 (no
        // 128-bit division, another library call) unless the run since the last rebase is
        // days long.
        let ns = if (run | self.ps_per_instruction) >> 32 == 0 {
            run * self.ps_per_instruction / 1000
        } else if let Some(ps) = run.checked_mul(self.ps_per_instruction) {
            ps / 1000
        } else {
            let ps = u128::from(run) * u128::from(self.ps_per_instruction);
            u64::try_from(ps / 1000).unwrap_or(u64::MAX)
        };
        self.base_ns.saturating_add(ns)
    }

    /// Instructions that take at least `ns` of virtual time (at least 1).
    fn instructions_for(&self, ns: Nanos) -> u64 {
        let n = (u128::from(ns) * 1000).div_ceil(u128::from(self.ps_per_instruction));
        u64::try_from(n).unwrap_or(u64::MAX).max(1)
    }

    /// Make `instructions` correspond to `ns` from now on.
    fn rebase(&mut self, ns: Nanos, instructions: u64) {
        self.base_ns = ns;
        self.base_instructions = instructions;
    }
}

/// The devices of the PC and the wiring between them: the port-I/O and MMIO buses, the devices
/// driven by time, the IRQ lines, the board signals and the virtual time of the access in
/// progress. Each device is built and wired in one place, [`Board::new`]; the board keeps a
/// typed handle on each for the host and the run loop.
pub struct Board {
    /// Virtual time of the current access or service pass.
    pub now: Nanos,
    clock: Clock,
    /// The ISA IRQ lines as the devices drive them.
    pub irq: IrqLines,
    /// Reset and A20 requests, collected until the machine acts on them.
    pub signals: BoardSignals,
    ports: DeviceBus,
    memory: DeviceBus,
    /// The devices driven by time, in the order they are advanced at one instant.
    timed: Vec<Rc<RefCell<dyn Timed>>>,
    pub pic: Shared<PicPair>,
    pub pit: Shared<Pit>,
    pub rtc: Shared<Rtc>,
    pub com1: Shared<Uart>,
    pub com2: Shared<Uart>,
    pub i8042: Shared<I8042>,
    pub pci: Shared<PciBus>,
    pub port_a: Shared<PortA>,
    pub post: Shared<PostCode>,
    /// The debug console (ports 0xE9 and 0x402).
    pub debugcon: Shared<DebugConsole>,
    /// The two 8237A DMA controllers and their page registers.
    pub dma: Shared<Dma>,
    /// QEMU's firmware configuration device (ports 0x510, 0x511 and 0x514).
    pub fw_cfg: Shared<FwCfg>,
    /// The floppy disk controller and its drives.
    pub fdc: Shared<Fdc>,
    /// FERR# → IRQ13 latch, cleared through port 0xF0.
    pub coprocessor: Shared<CoprocessorLatch>,
    /// The display adapter.
    pub vga: Shared<Vga>,
    /// The PIIX3 IDE controller (PCI 00:01.1) and its drives.
    pub ide: Shared<Ide>,
    /// Where the linear framebuffer is mapped on the MMIO bus (follows PCI BAR0 of the
    /// display; None while the BAR is 0 or placed over another device).
    lfb_at: Option<u32>,
    /// Where the IDE bus-master window is mapped (None while BAR4 or I/O decode is off).
    ide_bm_at: Option<u32>,
    /// The firmware the board was built with (its BIOS is mapped below 4 GiB).
    firmware: Option<Firmware>,
    /// The display's VGA BIOS, and where its expansion-ROM BAR maps it (None while the BAR or
    /// memory decode is off).
    vga_rom: Option<Shared<Rom>>,
    vga_rom_at: Option<u32>,
    /// The PAM registers as the CPU's page map last had them.
    pam_applied: [u8; 7],
    /// Changes of the MMIO map not yet handed to the CPU's page map.
    mmio_changes: Vec<MmioChange>,
    /// Interrupts the PIC handed to the CPU, per IRQ line, and spurious ones (counters, not
    /// state).
    irq_counts: [u64; 16],
    spurious_irqs: u64,
    /// The virtual time at which the CPU's current run ends (the earliest deadline known when
    /// it started, or its budget), and whether a port access since moved a device's deadline
    /// before it: the CPU then ends the run after that instruction, so the deadline is
    /// serviced on time (a guest that programs its timer would otherwise get the first tick,
    /// and lose the periodic ones, only at the end of the run).
    run_ends_at: Nanos,
    deadline_moved: bool,
    /// Real time: the clock runs at its fastest rate while an interrupt request waits (see
    /// [`Machine::hurry_while_a_request_waits`]); the CPU's next INTA then ends its run, so the
    /// clock goes back to its paced rate from the handler on.
    hurrying: bool,
}

/// The window an expansion-ROM BAR decodes for a ROM of `len` bytes (what
/// [`crate::dev::pci::PciConfig::set_rom`] declares).
fn rom_window(len: usize) -> u32 {
    (len as u32).max(2048).next_power_of_two()
}

/// The board's state: virtual time, the lines and signals, every device's state (see
/// [`Snapshot`]) and where the windows that PCI BARs place are mapped. Plain data: the display's
/// video memory and the drives' source images are not in it (the snapshot file holds the
/// first, the host passes the second again).
#[derive(Serialize, Deserialize)]
pub struct BoardState {
    now: Nanos,
    clock: Clock,
    irq: IrqLines,
    signals: BoardSignals,
    pic: <PicPair as Snapshot>::State,
    pit: <Pit as Snapshot>::State,
    rtc: <Rtc as Snapshot>::State,
    com1: <Uart as Snapshot>::State,
    com2: <Uart as Snapshot>::State,
    i8042: <I8042 as Snapshot>::State,
    pci: <PciBus as Snapshot>::State,
    port_a: <PortA as Snapshot>::State,
    post: <PostCode as Snapshot>::State,
    coprocessor: <CoprocessorLatch as Snapshot>::State,
    dma: <Dma as Snapshot>::State,
    fw_cfg: <FwCfg as Snapshot>::State,
    fdc: <Fdc as Snapshot>::State,
    vga: <Vga as Snapshot>::State,
    ide: <Ide as Snapshot>::State,
    lfb_at: Option<u32>,
    ide_bm_at: Option<u32>,
    firmware: Option<Firmware>,
    vga_rom_at: Option<u32>,
    pam_applied: [u8; 7],
}

/// The board's devices before they are wired: what [`Board::assemble`] maps.
struct Devices {
    now: Nanos,
    clock: Clock,
    irq: IrqLines,
    signals: BoardSignals,
    pic: Shared<PicPair>,
    pit: Shared<Pit>,
    rtc: Shared<Rtc>,
    com1: Shared<Uart>,
    com2: Shared<Uart>,
    i8042: Shared<I8042>,
    pci: Shared<PciBus>,
    port_a: Shared<PortA>,
    post: Shared<PostCode>,
    coprocessor: Shared<CoprocessorLatch>,
    dma: Shared<Dma>,
    fw_cfg: Shared<FwCfg>,
    fdc: Shared<Fdc>,
    vga: Shared<Vga>,
    ide: Shared<Ide>,
    lfb_at: Option<u32>,
    ide_bm_at: Option<u32>,
    firmware: Option<Firmware>,
    vga_rom_at: Option<u32>,
    pam_applied: [u8; 7],
}

/// Builds the buses while [`Board::assemble`] maps the devices.
struct Wiring {
    ports: DeviceBus,
    memory: DeviceBus,
    timed: Vec<Rc<RefCell<dyn Timed>>>,
}

impl Wiring {
    /// Map `device` at the port ranges `ranges` (base, length), its accesses counted under
    /// `name`.
    fn device<T: Device + 'static>(
        &mut self,
        name: &'static str,
        device: &Shared<T>,
        ranges: &[(u16, u32)],
    ) -> Result<(), MapError> {
        for &(base, len) in ranges {
            self.ports.map(base.into(), len, device.clone(), name)?;
        }
        Ok(())
    }

    /// [`Wiring::device`], for a device driven by virtual time.
    fn timed<T: Device + Timed + 'static>(
        &mut self,
        name: &'static str,
        device: &Shared<T>,
        ranges: &[(u16, u32)],
    ) -> Result<(), MapError> {
        self.device(name, device, ranges)?;
        self.timed.push(device.clone());
        Ok(())
    }
}

impl Board {
    /// The board at power-on.
    fn new(config: &MachineConfig) -> Result<Board, MapError> {
        let mut rtc = Rtc::new(config.rtc_unix_seconds);
        rtc.set_memory_size(config.ram_bytes as u64);
        let mut com1 = Uart::new(COM1_IRQ);
        let mut com2 = Uart::new(COM2_IRQ);
        com1.set_fast(config.fast_serial);
        com2.set_fast(config.fast_serial);
        let mut pci = PciBus::new();
        let mut display = Vga::pci_config();
        let firmware = config.firmware.clone();
        if let Some(rom) = firmware.as_ref().and_then(|f| f.vga_bios.as_ref()) {
            display.set_rom(rom.len() as u32);
        }
        pci.add(display).expect("slot 2 is free on a fresh bus");
        // A machine booted by its host has RAM in the whole BIOS area, as a BIOS that shadowed
        // itself leaves it; with firmware, the PAM registers are at their reset value (ROM).
        let pam_applied = if let Some(f) = &firmware {
            f.boot_order.write_cmos(&mut rtc);
            [0; 7]
        } else {
            pci::PAM_ALL_RAM
        };
        pci.set_pam(pam_applied);
        // The slot is free on a fresh bus.
        let _ = pci.add(ide::pci_config());
        Board::assemble(Devices {
            now: 0,
            clock: Clock {
                base_ns: 0,
                base_instructions: 0,
                ps_per_instruction: config.ns_per_instruction.max(1) * 1000,
            },
            irq: IrqLines::default(),
            signals: BoardSignals::default(),
            pic: shared(PicPair::new()),
            pit: shared(Pit::new()),
            rtc: shared(rtc),
            com1: shared(com1),
            com2: shared(com2),
            i8042: shared(I8042::new()),
            pci: shared(pci),
            port_a: shared(PortA::default()),
            post: shared(PostCode::default()),
            coprocessor: shared(CoprocessorLatch::default()),
            dma: shared(Dma::new()),
            fw_cfg: shared(FwCfg::for_pc(config.ram_bytes as u64, "")),
            fdc: shared(Fdc::new()),
            vga: shared(Vga::new()),
            ide: shared(Ide::new()),
            lfb_at: Some(vga::LFB_DEFAULT),
            ide_bm_at: Some(ide::BM_DEFAULT_BASE.into()),
            firmware,
            vga_rom_at: None,
            pam_applied,
        })
    }

    /// The board of `state`, every device mapped where it answers: the one place that says
    /// which device is where.
    fn assemble(state: Devices) -> Result<Board, MapError> {
        let mut w = Wiring {
            ports: DeviceBus::ports(),
            memory: DeviceBus::memory(),
            timed: Vec::new(),
        };
        let s = &state;
        // The timed devices are advanced in this order when their deadlines fall at the same
        // instant.
        w.device("PIC 8259A pair", &s.pic, &PicPair::RANGES)?;
        w.timed("PIT 8254", &s.pit, &[(PIT_BASE, 4), (PORT_B, 1)])?;
        w.timed("RTC/CMOS", &s.rtc, &[(RTC_BASE, 2)])?;
        w.timed("COM1 16550A", &s.com1, &[(COM1_BASE, 8)])?;
        w.timed("COM2 16550A", &s.com2, &[(COM2_BASE, 8)])?;
        w.timed(
            "i8042 keyboard/mouse",
            &s.i8042,
            &[(I8042_DATA, 1), (I8042_CMD, 1)],
        )?;
        w.device("PCI configuration", &s.pci, &[(PCI_BASE, 8)])?;
        w.device("POST code port", &s.post, &[(POST_PORT, 1)])?;
        // The debug console holds no state: each board has a fresh one.
        let debugcon = shared(DebugConsole::default());
        w.device(
            "debug console",
            &debugcon,
            &[(debugcon::PORT_E9, 1), (debugcon::PORT_402, 1)],
        )?;
        w.device("system control port A", &s.port_a, &[(PORT_A, 1)])?;
        w.device(
            "coprocessor latch",
            &s.coprocessor,
            &[(COPROCESSOR_PORT, 1)],
        )?;
        w.device(
            "DMA 8237 pair",
            &s.dma,
            &[
                (dma::DMA1_BASE, dma::DMA1_LEN),
                (dma::DMA2_BASE, dma::DMA2_LEN),
                (dma::PAGE_BASE, dma::PAGE_LEN),
            ],
        )?;
        w.device(
            "fw_cfg",
            &s.fw_cfg,
            &[
                (fw_cfg::PORT_BASE, fw_cfg::PORT_LEN),
                (fw_cfg::DMA_BASE, fw_cfg::DMA_LEN),
            ],
        )?;
        w.device(
            "floppy controller",
            &s.fdc,
            &[(fdc::BASE, fdc::LEN), (fdc::DIR_PORT, 1)],
        )?;
        w.device(
            "VGA",
            &s.vga,
            &[
                (vga::PORT_BASE, vga::PORT_LEN),
                (vga::DISPI_BASE, vga::DISPI_LEN),
            ],
        )?;
        w.memory.map(
            vga::LEGACY_BASE,
            vga::LEGACY_LEN,
            s.vga.clone(),
            "VGA memory",
        )?;
        w.device(
            "IDE",
            &s.ide,
            &[
                (ide::PRIMARY_BASE, 8),
                (ide::PRIMARY_CTL, 1),
                (ide::SECONDARY_BASE, 8),
                (ide::SECONDARY_CTL, 1),
            ],
        )?;
        // The windows PCI BARs place (follow_bars moves them).
        if let Some(at) = s.lfb_at {
            w.memory
                .map(at, vga::VRAM_SIZE as u32, s.vga.clone(), "VGA memory")?;
        }
        if let Some(at) = s.ide_bm_at {
            w.ports.map(at, ide::BM_SIZE, s.ide.clone(), "IDE")?;
        }
        // The system BIOS ends at 4 GiB; the display's ROM is where its BAR put it.
        if let Some(f) = &s.firmware {
            let len = f.bios.len() as u32;
            w.memory.map(
                len.wrapping_neg(),
                len,
                shared(Rom::new(f.bios.clone())),
                "BIOS ROM",
            )?;
        }
        let vga_rom = s
            .firmware
            .as_ref()
            .and_then(|f| f.vga_bios.clone())
            .map(|image| shared(Rom::new(image)));
        if let (Some(at), Some(f)) = (s.vga_rom_at, &s.firmware) {
            if let (Some(rom), Some(image)) = (&vga_rom, &f.vga_bios) {
                w.memory
                    .map(at, rom_window(image.len()), rom.clone(), "VGA BIOS ROM")?;
            }
        }
        Ok(Board {
            now: state.now,
            clock: state.clock,
            irq: state.irq,
            signals: state.signals,
            ports: w.ports,
            memory: w.memory,
            timed: w.timed,
            pic: state.pic,
            pit: state.pit,
            rtc: state.rtc,
            com1: state.com1,
            com2: state.com2,
            i8042: state.i8042,
            pci: state.pci,
            port_a: state.port_a,
            post: state.post,
            debugcon,
            coprocessor: state.coprocessor,
            dma: state.dma,
            fw_cfg: state.fw_cfg,
            fdc: state.fdc,
            vga: state.vga,
            ide: state.ide,
            lfb_at: state.lfb_at,
            ide_bm_at: state.ide_bm_at,
            firmware: state.firmware,
            vga_rom,
            vga_rom_at: state.vga_rom_at,
            pam_applied: state.pam_applied,
            mmio_changes: Vec::new(),
            irq_counts: [0; 16],
            spurious_irqs: 0,
            run_ends_at: Nanos::MAX,
            deadline_moved: false,
            hurrying: false,
        })
    }

    /// The board's state.
    fn state(&self) -> BoardState {
        BoardState {
            now: self.now,
            clock: self.clock,
            irq: self.irq,
            signals: self.signals,
            pic: self.pic.borrow().state(),
            pit: self.pit.borrow().state(),
            rtc: self.rtc.borrow().state(),
            com1: self.com1.borrow().state(),
            com2: self.com2.borrow().state(),
            i8042: self.i8042.borrow().state(),
            pci: self.pci.borrow().state(),
            port_a: self.port_a.borrow().state(),
            post: self.post.borrow().state(),
            coprocessor: self.coprocessor.borrow().state(),
            dma: self.dma.borrow().state(),
            fw_cfg: self.fw_cfg.borrow().state(),
            fdc: self.fdc.borrow().state(),
            vga: self.vga.borrow().state(),
            ide: self.ide.borrow().state(),
            lfb_at: self.lfb_at,
            ide_bm_at: self.ide_bm_at,
            firmware: self.firmware.clone(),
            vga_rom_at: self.vga_rom_at,
            pam_applied: self.pam_applied,
        }
    }

    /// The board in `state`, each device rebuilt from its state and wired; an impossible
    /// state is an error naming what is wrong.
    fn from_state(state: BoardState) -> Result<Board, String> {
        fn device<T: Snapshot>(what: &str, state: T::State) -> Result<Shared<T>, String> {
            T::from_state(state)
                .map(shared)
                .map_err(|e| format!("the {what}: {e}"))
        }
        Board::assemble(Devices {
            now: state.now,
            clock: state.clock,
            irq: state.irq,
            signals: state.signals,
            pic: device("interrupt controllers", state.pic)?,
            pit: device("timer", state.pit)?,
            rtc: device("real-time clock", state.rtc)?,
            com1: device("first serial port", state.com1)?,
            com2: device("second serial port", state.com2)?,
            i8042: device("keyboard controller", state.i8042)?,
            pci: device("PCI bus", state.pci)?,
            port_a: device("system control port", state.port_a)?,
            post: device("POST code port", state.post)?,
            coprocessor: device("coprocessor latch", state.coprocessor)?,
            dma: device("DMA controllers", state.dma)?,
            fw_cfg: device("firmware configuration", state.fw_cfg)?,
            fdc: device("floppy controller", state.fdc)?,
            vga: device("display", state.vga)?,
            ide: device("IDE controller", state.ide)?,
            lfb_at: state.lfb_at,
            ide_bm_at: state.ide_bm_at,
            firmware: state.firmware,
            vga_rom_at: state.vga_rom_at,
            pam_applied: state.pam_applied,
        })
        .map_err(|e| format!("the devices' ranges: {e}"))
    }

    /// The MMIO ranges mapped now, as (base, length).
    pub fn mmio_ranges(&self) -> Vec<(u32, u32)> {
        self.memory.ranges().collect()
    }

    /// The whole physical memory map as the board decodes it now, as changes from plain RAM:
    /// the MMIO ranges and the BIOS area's shadowing.
    fn memory_map(&self) -> Vec<MmioChange> {
        let mmio = self
            .mmio_ranges()
            .into_iter()
            .map(|(start, len)| MmioChange {
                start,
                len,
                to: MapTo::Mmio,
            });
        let shadow = pci::pam_segments(self.pam_applied)
            .into_iter()
            .map(|(start, len, attr)| MmioChange {
                start,
                len,
                to: MapTo::Shadow(attr),
            });
        shadow.chain(mmio).collect()
    }

    /// The firmware the board was built with.
    pub fn firmware(&self) -> Option<&Firmware> {
        self.firmware.as_ref()
    }

    /// Run `f` on `device` at the current virtual time (a host event: input, output, storage),
    /// then feed the IRQ lines to the PIC.
    fn on_device<T: ?Sized, R>(
        &mut self,
        device: &Shared<T>,
        f: impl FnOnce(&mut T, &mut DevCtx) -> R,
    ) -> R {
        let mut ctx = DevCtx {
            now: self.now,
            irq: &mut self.irq,
            board: &mut self.signals,
        };
        let r = f(&mut device.borrow_mut(), &mut ctx);
        self.pic.borrow_mut().set_irq_levels(self.irq.levels());
        r
    }

    /// A guest IN; all ones where nothing answers.
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        let mut ctx = DevCtx {
            now: self.now,
            irq: &mut self.irq,
            board: &mut self.signals,
        };
        let v = self.ports.read(port.into(), size, &mut ctx);
        // A device access may have moved an IRQ line.
        self.pic.borrow_mut().set_irq_levels(self.irq.levels());
        self.note_deadline();
        v.unwrap_or_else(|| all_ones(size))
    }

    /// After a port access: did it bring a device's deadline before the end of the CPU's run?
    fn note_deadline(&mut self) {
        if self.next_deadline().is_some_and(|d| d < self.run_ends_at) {
            self.deadline_moved = true;
        }
    }

    /// A guest OUT.
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        let mut ctx = DevCtx {
            now: self.now,
            irq: &mut self.irq,
            board: &mut self.signals,
        };
        self.ports.write(port.into(), size, value, &mut ctx);
        self.pic.borrow_mut().set_irq_levels(self.irq.levels());
        self.note_deadline();
        if std::mem::take(&mut self.signals.pci_config_written) {
            self.follow_bars();
        }
    }

    /// A guest load from MMIO; all ones where nothing answers. The devices on the MMIO bus (the
    /// display) drive no interrupt line, so the PIC is not fed: this is the framebuffer
    /// console's path, one access per byte.
    fn mmio_read(&mut self, addr: u32, size: u8) -> u32 {
        let mut ctx = DevCtx {
            now: self.now,
            irq: &mut self.irq,
            board: &mut self.signals,
        };
        let v = self.memory.read(addr, size, &mut ctx);
        v.unwrap_or_else(|| all_ones(size))
    }

    /// A guest store to MMIO (see [`Board::mmio_read`]).
    fn mmio_write(&mut self, addr: u32, size: u8, value: u32) {
        let mut ctx = DevCtx {
            now: self.now,
            irq: &mut self.irq,
            board: &mut self.signals,
        };
        self.memory.write(addr, size, value, &mut ctx);
    }

    /// A run of guest stores of one value to MMIO (see [`Bus::mmio_fill`]).
    fn mmio_fill(&mut self, addr: u32, size: u8, value: u32, count: u32) {
        let mut ctx = DevCtx {
            now: self.now,
            irq: &mut self.irq,
            board: &mut self.signals,
        };
        self.memory.fill(addr, size, value, count, &mut ctx);
    }

    /// Map the windows that PCI BARs place where the guest put them, at once: the IDE
    /// bus-master registers (BAR4 of the IDE function) on the port bus and the framebuffer
    /// (BAR0 of the display) on the MMIO bus. Called after every guest write to configuration
    /// space (the PCI bus signals it); compares with the current mapping, so an unchanged BAR
    /// costs nothing. A BAR placed over another device's range is not decoded.
    fn follow_bars(&mut self) {
        let (bm, lfb) = {
            let pci = self.pci.borrow();
            // The function's command register and IDE timing decode bits gate the device.
            if let Some(f) = pci.function(ide::IDE_DEVFN) {
                self.ide.borrow_mut().sync_pci(f);
            }
            let bm = pci.function(ide::IDE_DEVFN).and_then(|f| {
                let on = f.command() & crate::dev::pci::CMD_IO != 0;
                let addr = f.bar_address(ide::BM_BAR)?;
                (on && addr != 0 && addr <= 0xFFFF - ide::BM_SIZE).then_some(addr)
            });
            // A BAR at 0 is being sized or disabled: decode nothing.
            let lfb = pci
                .function(vga::PCI_DEVFN)
                .and_then(|f| f.bar_address(0))
                .filter(|&a| a != 0);
            (bm, lfb)
        };
        if bm != self.ide_bm_at {
            if let Some(old) = self.ide_bm_at.take() {
                let _ = self.ports.unmap(old);
            }
            let ide: Rc<RefCell<dyn Device>> = self.ide.clone();
            self.ide_bm_at =
                bm.filter(|&a| self.ports.map(a, ide::BM_SIZE, ide.clone(), "IDE").is_ok());
        }
        if lfb != self.lfb_at {
            let vga: Rc<RefCell<dyn Device>> = self.vga.clone();
            self.lfb_at =
                self.move_window(self.lfb_at, lfb, vga::VRAM_SIZE as u32, vga, "VGA memory");
        }
        let rom_at = self
            .pci
            .borrow()
            .function(vga::PCI_DEVFN)
            .and_then(|f| f.rom_address());
        if let (Some(rom), Some(image)) = (self.vga_rom.clone(), self.firmware_vga_bios_len()) {
            if rom_at != self.vga_rom_at {
                self.vga_rom_at = self.move_window(
                    self.vga_rom_at,
                    rom_at,
                    rom_window(image),
                    rom,
                    "VGA BIOS ROM",
                );
            }
        }
        // The chipset's shadow RAM: each part of the BIOS area whose PAM field changed.
        let pam = self.pci.borrow().pam();
        if pam != self.pam_applied {
            let old = pci::pam_segments(self.pam_applied);
            for (n, (start, len, attr)) in pci::pam_segments(pam).into_iter().enumerate() {
                if attr != old[n].2 {
                    self.mmio_changes.push(MmioChange {
                        start,
                        len,
                        to: MapTo::Shadow(attr),
                    });
                }
            }
            self.pam_applied = pam;
        }
    }

    /// The length of the VGA BIOS, if the board has one.
    fn firmware_vga_bios_len(&self) -> Option<usize> {
        self.firmware.as_ref()?.vga_bios.as_ref().map(|i| i.len())
    }

    /// Move the MMIO window of `len` bytes that `device` serves from `old` to `new` (None: map
    /// it nowhere), and tell the CPU. Returns where it is mapped now: not where it would
    /// overlap another range (such a BAR is not decoded).
    fn move_window(
        &mut self,
        old: Option<u32>,
        new: Option<u32>,
        len: u32,
        device: Rc<RefCell<dyn Device>>,
        name: &'static str,
    ) -> Option<u32> {
        if let Some(old) = old {
            let _ = self.memory.unmap(old);
            self.mmio_changes.push(MmioChange {
                start: old,
                len,
                to: MapTo::Memory,
            });
        }
        let at = new.filter(|&a| self.memory.map(a, len, device, name).is_ok());
        // What the old window covered and is still mapped (the legacy window, another ROM)
        // stays MMIO, and the BIOS area keeps its shadowing.
        let map = self.memory_map();
        self.mmio_changes.extend(map);
        at
    }

    /// Run `f` on the image (the copy-on-write overlay) of image slot `slot` (see
    /// [`IMAGE_SLOTS`]), if that drive has media.
    pub fn with_image<R>(&self, slot: usize, f: impl FnOnce(&mut Overlay) -> R) -> Option<R> {
        if slot < FLOPPY_SLOT {
            let mut ide = self.ide.borrow_mut();
            ide.drive_mut(slot).and_then(|d| d.image_mut()).map(f)
        } else {
            let mut fdc = self.fdc.borrow_mut();
            fdc.diskette_mut(slot - FLOPPY_SLOT)
                .map(|d| f(d.image_mut()))
        }
    }

    /// Carry out the transfers an OUT just started: fw_cfg's DMA, and a floppy transfer
    /// through the 8237A (both complete before the OUT retires, as their guests expect).
    fn run_port_dma(&mut self, mem: &mut crate::mem::Memory) {
        {
            let mut fw_cfg = self.fw_cfg.borrow_mut();
            if fw_cfg.dma_pending() {
                fw_cfg.run_dma(mem);
            }
        }
        if self.fdc.borrow().dma_pending() {
            let (fdc, dma) = (self.fdc.clone(), self.dma.clone());
            self.on_device(&fdc, |fdc, ctx| {
                fdc.run_dma(&mut dma.borrow_mut(), mem, ctx)
            });
        }
    }

    /// Run armed IDE DMA transfers against guest RAM (between CPU slices: the CPU owns RAM
    /// while it runs).
    fn run_ide_dma(&mut self, mem: &mut crate::mem::Memory) {
        if !self.ide.borrow().dma_ready() {
            return;
        }
        let ide = self.ide.clone();
        self.on_device(&ide, |ide, ctx| ide.run_dma(mem, ctx));
    }

    /// The nearest time at which a device must be advanced.
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.timed
            .iter()
            .filter_map(|d| d.borrow().next_deadline())
            .min()
    }

    /// Advance every device whose deadline is at or before `now`, feeding the PIC after each
    /// step. A device may ask to be advanced again at the same instant (the PIT does, to turn a
    /// missed IRQ0 pulse into an edge the PIC sees), so passes repeat, a bounded number of times.
    fn service(&mut self, now: Nanos) {
        self.now = self.now.max(now);
        for _ in 0..MAX_SERVICE_PASSES {
            let mut any = false;
            for device in &self.timed {
                if device
                    .borrow()
                    .next_deadline()
                    .is_some_and(|t| t <= self.now)
                {
                    let mut ctx = DevCtx {
                        now: self.now,
                        irq: &mut self.irq,
                        board: &mut self.signals,
                    };
                    device.borrow_mut().advance(&mut ctx);
                    self.pic.borrow_mut().set_irq_levels(self.irq.levels());
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
    }
}

/// The CPU's view of the board: a shared handle (see the module comment for why).
pub struct BoardBus(Rc<RefCell<Board>>);

impl Bus for BoardBus {
    fn set_instructions(&mut self, instructions: u64) {
        let mut b = self.0.borrow_mut();
        b.now = b.now.max(b.clock.at(instructions));
    }

    fn tsc(&mut self, instructions: u64) -> Option<u64> {
        let b = self.0.borrow();
        Some(b.now.max(b.clock.at(instructions)) / TSC_NS)
    }

    fn io_read(&mut self, port: u16, size: u8) -> u32 {
        self.0.borrow_mut().port_read(port, size)
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32) {
        self.0.borrow_mut().port_write(port, size, value);
    }

    fn mmio_read(&mut self, addr: u32, size: u8) -> u32 {
        self.0.borrow_mut().mmio_read(addr, size)
    }

    fn mmio_write(&mut self, addr: u32, size: u8, value: u32) {
        self.0.borrow_mut().mmio_write(addr, size, value);
    }

    fn mmio_fill(&mut self, addr: u32, size: u8, value: u32, count: u32) {
        self.0.borrow_mut().mmio_fill(addr, size, value, count);
    }

    fn run_port_dma(&mut self, mem: &mut crate::mem::Memory) {
        self.0.borrow_mut().run_port_dma(mem);
    }

    fn take_mmio_changes(&mut self) -> Vec<MmioChange> {
        std::mem::take(&mut self.0.borrow_mut().mmio_changes)
    }

    fn take_a20(&mut self) -> Option<bool> {
        self.0.borrow_mut().signals.a20.take()
    }

    fn take_deadline_moved(&mut self) -> bool {
        std::mem::take(&mut self.0.borrow_mut().deadline_moved)
    }

    fn interrupt_pending(&self) -> bool {
        self.0.borrow().pic.borrow().interrupt_pending()
    }

    fn acknowledge_interrupt(&mut self) -> u8 {
        let mut b = self.0.borrow_mut();
        if b.hurrying {
            b.deadline_moved = true;
        }
        let (vector, line) = b.pic.borrow_mut().acknowledge_line();
        match line {
            Some(irq) => b.irq_counts[usize::from(irq & 15)] += 1,
            None => b.spurious_irqs += 1,
        }
        vector
    }

    fn fpu_error(&mut self, asserted: bool) {
        let mut b = self.0.borrow_mut();
        let latch = b.coprocessor.clone();
        b.on_device(&latch, |latch, ctx| latch.ferr(asserted, ctx));
    }
}

/// Image slots: the IDE positions 0-3 (primary master, primary slave, secondary master,
/// secondary slave), then floppy drives A: and B:.
pub const IMAGE_SLOTS: usize = 6;
/// The image slot of floppy drive A:.
pub const FLOPPY_SLOT: usize = 4;

/// Why the machine reset itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// A triple fault (or an exception the CPU could not deliver).
    TripleFault,
    /// The guest pulsed the reset line (i8042 command 0xFE, port 0x92, port 0xCF9).
    Guest,
}

/// Why [`Machine::run`] or [`Machine::run_realtime`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The instruction budget was used up (or, in real time, virtual time reached the host's).
    Budget,
    /// The CPU halted and nothing will wake it without input from the host (interrupts off, or
    /// no device has a deadline); in real-time mode, it halted until `next_deadline`.
    Idle { next_deadline: Option<Nanos> },
    /// The machine was reset (its devices and CPU are in their power-on state; RAM is kept).
    Reset(ResetCause),
}

/// The PC: CPU, RAM and the board's devices.
pub struct Machine {
    /// The processor with guest RAM.
    pub cpu: Cpu,
    board: Rc<RefCell<Board>>,
    config: MachineConfig,
    /// Real time: where the host's speed was last measured.
    rate_sample: Option<RateSample>,
    /// Real time: the clock's paced rate (virtual ps per instruction) while it runs at its
    /// fastest because an interrupt request waits (see [`Machine::hurry_while_a_request_waits`]).
    paced_ps: Option<u64>,
    /// Real time: host time the guest was not given, in all (lags beyond [`MAX_CATCH_UP_NS`],
    /// see [`Machine::run_realtime`]). Subtracted from every host clock reading.
    forgiven_ns: Nanos,
    /// The names (paths, URLs) the host gave the drives' images, by image slot (see
    /// [`IMAGE_SLOTS`]), for snapshots.
    disk_names: [String; IMAGE_SLOTS],
    /// The recording being made, if one is (see `record.rs`).
    recorder: Option<Recorder>,
    /// A recording that ended and was not taken yet.
    ended_recording: Option<Recording>,
}

/// Real time: a host clock reading and the instruction count then.
#[derive(Clone, Copy, Debug)]
struct RateSample {
    host: Nanos,
    instructions: u64,
    /// The guest has not halted since (so the host time went into instructions).
    busy: bool,
    /// Virtual time got ahead of the host since (a host that waits whenever the guest is
    /// ahead may have waited).
    ahead: bool,
    /// The CPU stopped at the lead since ([`REALTIME_LEAD_NS`] ahead of the host): it had to
    /// wait for the host, so the host time did not all go into instructions.
    pinned: bool,
}

impl Machine {
    /// A machine in its power-on state.
    pub fn new(config: MachineConfig) -> Machine {
        // The port map is fixed and overlap-free; a failure here is a bug in this file.
        let board = Board::new(&config).expect("the board's port ranges do not overlap");
        Machine::with_board(config, board)
    }

    /// A machine with the CPU at power-on and `board`, its MMIO ranges marked in the CPU's
    /// page map.
    fn with_board(config: MachineConfig, board: Board) -> Machine {
        let board = Rc::new(RefCell::new(board));
        let mut cpu = Cpu::new(config.ram_bytes, Box::new(BoardBus(Rc::clone(&board))));
        if let Some(f) = board.borrow().firmware() {
            // The BIOS's last 128 KiB (or all of it) is the ROM side of the BIOS area's top.
            let bios = f.bios.bytes();
            let low = &bios[bios.len().saturating_sub(rom::LOW_BIOS_LEN)..];
            cpu.mem.load_bios_rom(0x10_0000 - low.len() as u32, low);
        }
        for change in board.borrow().memory_map() {
            change.apply(&mut cpu.mem);
        }
        Machine {
            cpu,
            board,
            config,
            rate_sample: None,
            paced_ps: None,
            forgiven_ns: 0,
            disk_names: Default::default(),
            recorder: None,
            ended_recording: None,
        }
    }

    /// The configuration the machine was built with.
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// The devices (for hosts and tests that inspect or feed them).
    pub fn board(&self) -> std::cell::RefMut<'_, Board> {
        self.board.borrow_mut()
    }

    /// Current virtual time.
    pub fn now(&self) -> Nanos {
        let b = self.board.borrow();
        b.now.max(b.clock.at(self.cpu.instructions))
    }

    /// Power-cycle the CPU and devices. RAM keeps its contents (a warm reset); virtual time
    /// continues.
    pub fn reset(&mut self) {
        self.record(|at| Event::Reset { at });
        let now = self.now();
        let mut fresh = Board::new(&self.config).expect("the board's port ranges do not overlap");
        {
            let old = self.board.borrow();
            // Drives and their media survive a reset.
            std::mem::swap(&mut *fresh.ide.borrow_mut(), &mut *old.ide.borrow_mut());
            fresh.ide.borrow_mut().reset();
            std::mem::swap(&mut *fresh.fdc.borrow_mut(), &mut *old.fdc.borrow_mut());
            let mut fdc = fresh.fdc.borrow_mut();
            fdc.power_on();
            let mut rtc = fresh.rtc.borrow_mut();
            rtc.set_floppy_types(fdc.cmos_type(0), fdc.cmos_type(1));
            // The memory map goes back to its power-on state (the framebuffer where BAR0 is
            // at reset, the BIOS area's shadowing as the PAM registers reset it).
            for (start, len) in old.mmio_ranges() {
                self.cpu.mem.map(start, len, PageKind::Ram);
            }
            for change in fresh.memory_map() {
                change.apply(&mut self.cpu.mem);
            }
            // The counters go on counting across the reset.
            fresh.ports.carry_counts_from(&old.ports);
            fresh.memory.carry_counts_from(&old.memory);
            fresh.irq_counts = old.irq_counts;
            fresh.spurious_irqs = old.spurious_irqs;
        }
        fresh.now = now;
        fresh.clock.rebase(now, self.cpu.instructions);
        // Devices count time from their own reset only where they say so; give them the clock.
        *self.board.borrow_mut() = fresh;
        self.cpu.reset();
        self.cpu.set_a20(true);
    }

    /// Deterministic run: execute up to about `max_instructions` instructions (a slice may end a
    /// block later), servicing devices at their deadlines and skipping idle time.
    pub fn run(&mut self, max_instructions: u64) -> Stop {
        self.record(|_| Event::Run {
            budget: max_instructions,
            host_ns: None,
        });
        self.run_inner(max_instructions, None)
    }

    /// Real-time run: virtual time follows `host_now` (the host's clock, in nanoseconds since
    /// the machine started). The CPU runs until it is [`REALTIME_LEAD_NS`] ahead of the host,
    /// halts with nothing due before `host_now`, or used `max_instructions`.
    ///
    /// While the guest computes, virtual time never jumps: the clock's rate (virtual time per
    /// instruction) is adjusted to the host's measured speed, so that a lag closes smoothly over
    /// [`RATE_WINDOW_NS`]. A guest timing its processor against the PIT in a busy loop (Linux's
    /// TSC calibration) sees a steady clock. Idle time (the guest halted) passes as the host
    /// clock says, deadline by deadline, so the guest's interrupt handler sees every timer tick.
    /// While an interrupt request waits that the CPU cannot take yet (interrupts off, or one
    /// of the same priority in service), the clock runs at its fastest rate (see
    /// [`Machine::hurry_while_a_request_waits`]).
    ///
    /// Virtual time never jumps past a deadline, so the guest never loses a timer tick to the
    /// host: a lag beyond [`MAX_CATCH_UP_NS`] (the host was suspended, a browser tab was in the
    /// background) is forgiven, not skipped: the guest's clock falls behind the host's by that
    /// much and runs on steadily. A [`Stop::Idle`] deadline is in the host's clock (what was
    /// forgiven added).
    pub fn run_realtime(&mut self, host_now: Nanos, max_instructions: u64) -> Stop {
        let now = self.now();
        let mut host_now = host_now.saturating_sub(self.forgiven_ns);
        let lag = host_now.saturating_sub(now);
        if lag > MAX_CATCH_UP_NS {
            self.forgiven_ns += lag - MAX_CATCH_UP_NS;
            host_now = now + MAX_CATCH_UP_NS;
        }
        // The host time as the guest is given it: a replay (which starts with nothing
        // forgiven) gives the same.
        self.record(|_| Event::Run {
            budget: max_instructions,
            host_ns: Some(host_now),
        });
        self.adapt_rate(host_now);
        let stop = self.run_inner(max_instructions, Some(host_now));
        self.stop_hurrying();
        let now = self.now();
        if let Some(sample) = self.rate_sample.as_mut() {
            sample.ahead |= now > host_now;
            sample.pinned |= now >= host_now.saturating_add(REALTIME_LEAD_NS);
        }
        match stop {
            Stop::Idle { next_deadline } => Stop::Idle {
                next_deadline: next_deadline.map(|d| d.saturating_add(self.forgiven_ns)),
            },
            stop => stop,
        }
    }

    /// Real time: host time the guest was not given, in all (see [`Machine::run_realtime`]):
    /// the guest's clock is this far behind the host clock the host passes in.
    pub fn forgiven_ns(&self) -> Nanos {
        self.forgiven_ns
    }

    /// Real time: while an interrupt request is pending at the PIC that the CPU cannot take yet
    /// (IF clear, or a request of the same or higher priority in service), run the clock at its
    /// fastest rate ([`MIN_PS_PER_INSTRUCTION`], as a 1 GHz processor) until the CPU takes it.
    /// The paced rate follows the host's speed, which can be a hundred times slower than a
    /// real processor's: code with interrupts off (Linux drawing on its framebuffer console,
    /// where printk holds interrupts off) would span many timer periods of virtual time, and
    /// the ticks after the first would be lost (a PIC request latches once), so the kernel
    /// would see its TSC run ahead of the PIT and mark it unstable. At the fastest rate such
    /// code takes the virtual time it takes on real hardware, and the lag it leaves is caught
    /// up by the paced rate afterwards ([`Machine::adapt_rate`]).
    fn hurry_while_a_request_waits(&mut self) {
        let waiting = {
            let b = self.board.borrow();
            let pic = b.pic.borrow();
            let can_take = self.cpu.flags.sys(flags::IF) && pic.interrupt_pending();
            pic.request_waiting() && !can_take
        };
        if waiting && self.paced_ps.is_none() {
            let (now, instr) = (self.now(), self.cpu.instructions);
            let mut b = self.board.borrow_mut();
            b.clock.rebase(now, instr);
            self.paced_ps = Some(b.clock.ps_per_instruction);
            b.clock.ps_per_instruction = MIN_PS_PER_INSTRUCTION;
            b.hurrying = true;
        } else if !waiting {
            self.stop_hurrying();
        }
    }

    /// The clock back at its paced rate (see [`Machine::hurry_while_a_request_waits`]).
    fn stop_hurrying(&mut self) {
        if let Some(paced) = self.paced_ps.take() {
            let (now, instr) = (self.now(), self.cpu.instructions);
            let mut b = self.board.borrow_mut();
            b.clock.rebase(now, instr);
            b.clock.ps_per_instruction = paced;
            b.hurrying = false;
        }
    }

    /// Real time: steer the clock's rate towards the host clock, once per [`RATE_SAMPLE_NS`] of
    /// host time in which the guest stayed busy. If the CPU ran flat out all that time behind
    /// the host's clock, the sample measured the host's speed: each instruction takes as long
    /// as it took the host, and `1 + lag / RATE_WINDOW_NS` times that while virtual time lags,
    /// so that it catches up smoothly. If virtual time got ahead of the host's (a host that
    /// waits for its clock whenever the guest is ahead may have waited), instructions get 10%
    /// shorter. If the CPU stopped at the lead (virtual time runs too fast for the
    /// instructions the host can run, as when a busy guest turns from slow code, or from
    /// halting, to code the host runs many times faster), the sample says only that the host
    /// is faster than the clock: instructions get twice as short, and the next sample in which
    /// the CPU runs flat out measures the host again. A busy guest thus waits for its clock for
    /// a few samples at most, where cutting by 10% at a time (this controller's first form)
    /// kept a guest just started on a fast loop waiting for tens of milliseconds.
    fn adapt_rate(&mut self, host_now: Nanos) {
        let instr = self.cpu.instructions;
        let fresh = RateSample {
            host: host_now,
            instructions: instr,
            busy: true,
            ahead: false,
            pinned: false,
        };
        let Some(last) = self.rate_sample else {
            self.rate_sample = Some(fresh);
            return;
        };
        let elapsed = host_now.saturating_sub(last.host);
        if elapsed < RATE_SAMPLE_NS {
            return;
        }
        if last.busy && instr > last.instructions {
            let lag = i128::from(host_now) - i128::from(self.now());
            let window = i128::from(RATE_WINDOW_NS);
            let now = self.now();
            let mut b = self.board.borrow_mut();
            let ps = i128::from(b.clock.ps_per_instruction);
            let wanted = if last.pinned {
                ps / 2
            } else if last.ahead {
                ps * 9 / 10
            } else {
                let measured = i128::from(elapsed) * 1000 / i128::from(instr - last.instructions);
                measured * (window + lag.clamp(0, window)) / window
            }
            .clamp(MIN_PS_PER_INSTRUCTION.into(), MAX_PS_PER_INSTRUCTION.into());
            b.clock.rebase(now, instr);
            b.clock.ps_per_instruction = wanted as u64;
        }
        self.rate_sample = Some(fresh);
    }

    /// Move virtual time forward to `t` without executing instructions (idle time). The TSC
    /// moves with it: it counts virtual time (see [`TSC_NS`]), so it stays in step with the
    /// timers (Linux checks the TSC against the PIT and distrusts a TSC that stops in HLT).
    fn skip_to(&mut self, t: Nanos) {
        let now = self.now();
        let instr = self.cpu.instructions;
        self.board.borrow_mut().clock.rebase(t.max(now), instr);
    }

    /// The run loop. `host_now` is the host's clock in real-time mode, None in deterministic mode.
    fn run_inner(&mut self, max_instructions: u64, host_now: Option<Nanos>) -> Stop {
        let end = self.cpu.instructions.saturating_add(max_instructions);
        let limit_ns = host_now.map(|h| h.saturating_add(REALTIME_LEAD_NS));
        // Where idle skipping started (instruction count, virtual time): skipping on for
        // `MAX_IDLE_SKIP_NS` with nothing executed (a guest halted with every interrupt masked at
        // the PIC, so only silent deadlines remain) returns to the host instead of skipping from
        // deadline to deadline forever.
        let mut idle_since: Option<(u64, Nanos)> = None;
        let started = self.now();
        loop {
            // Real time: idle time passes as the host clock says; a busy guest's clock is
            // steered by its rate instead (see `run_realtime`).
            if let Some(h) = host_now.filter(|_| self.cpu.halted) {
                self.catch_up(h);
            }
            let now = self.now();
            {
                let mut b = self.board.borrow_mut();
                b.service(now);
                b.run_ide_dma(&mut self.cpu.mem);
            }
            if host_now.is_some() {
                self.hurry_while_a_request_waits();
            }
            let (next, clock) = {
                let b = self.board.borrow();
                (b.next_deadline(), b.clock)
            };
            if let Some(stop) = self.handle_signals() {
                return stop;
            }
            if self.cpu.instructions >= end || limit_ns.is_some_and(|l| now >= l) {
                return Stop::Budget;
            }
            let mut budget = (end - self.cpu.instructions).min(MAX_SLICE);
            if let Some(d) = next {
                budget = budget.min(clock.instructions_for(d.saturating_sub(now)));
            }
            if let Some(l) = limit_ns {
                budget = budget.min(clock.instructions_for(l.saturating_sub(now)));
            }
            {
                let mut b = self.board.borrow_mut();
                b.run_ends_at = clock.at(self.cpu.instructions.saturating_add(budget));
                b.deadline_moved = false;
            }
            let exit = self.cpu.run(budget);
            self.board.borrow_mut().run_ends_at = Nanos::MAX;
            match exit {
                RunExit::Budget => {}
                RunExit::Shutdown => {
                    self.reset();
                    return Stop::Reset(ResetCause::TripleFault);
                }
                RunExit::Halted => {
                    if let Some(sample) = self.rate_sample.as_mut() {
                        sample.busy = false;
                    }
                    let now = self.now();
                    // A pending signal (e.g. a reset written just before HLT) comes first.
                    {
                        let mut b = self.board.borrow_mut();
                        b.service(now);
                        b.run_ide_dma(&mut self.cpu.mem);
                    }
                    if let Some(stop) = self.handle_signals() {
                        return stop;
                    }
                    let next = self.board.borrow().next_deadline();
                    let can_wake = self.cpu.flags.sys(flags::IF);
                    if can_wake && self.cpu.bus.interrupt_pending() {
                        continue;
                    }
                    match (next, host_now) {
                        // Deterministic mode: nothing happens until the next deadline. Always
                        // move forward, so a device that keeps asking for a past deadline
                        // cannot stall the loop.
                        // But not while a drive waits for the host's data: the fetch takes
                        // host time, not guest time, so the guest's disk timeouts must not run
                        // out while it happens.
                        (Some(d), None)
                            if can_wake
                                && !self.board.borrow().ide.borrow().waiting_for_host()
                                && !idle_since.is_some_and(|(i, t)| {
                                    i == self.cpu.instructions
                                        && now.saturating_sub(t) >= MAX_IDLE_SKIP_NS
                                }) =>
                        {
                            if now.saturating_sub(started) >= MAX_IDLE_SKIP_PER_RUN_NS {
                                return Stop::Budget;
                            }
                            if idle_since.is_none_or(|(i, _)| i != self.cpu.instructions) {
                                idle_since = Some((self.cpu.instructions, now));
                            }
                            self.skip_to(d.max(now.saturating_add(1)))
                        }
                        // Real time: idle time passes as the host clock says (the loop top
                        // catches up deadline by deadline); beyond it, the host waits.
                        (_, Some(h)) if can_wake && now < h => {}
                        _ => {
                            return Stop::Idle {
                                next_deadline: if can_wake { next } else { None },
                            }
                        }
                    }
                }
            }
        }
    }

    /// Real time: move virtual time towards the host clock `host_now`, but not past the next
    /// device deadline (see [`Machine::run_realtime`]).
    fn catch_up(&mut self, host_now: Nanos) {
        let now = self.now();
        if now >= host_now {
            return;
        }
        let target = match self.board.borrow().next_deadline() {
            Some(d) if d <= now => return,
            Some(d) => d.min(host_now),
            None => host_now,
        };
        self.skip_to(target);
    }

    /// Act on the board signals the devices raised: A20 changes and reset requests.
    fn handle_signals(&mut self) -> Option<Stop> {
        let signals = std::mem::take(&mut self.board.borrow_mut().signals);
        if let Some(a20) = signals.a20 {
            self.cpu.set_a20(a20);
        }
        if signals.reset {
            self.reset();
            return Some(Stop::Reset(ResetCause::Guest));
        }
        None
    }

    /// Put a drive at IDE position `slot` (0 = primary master /dev/sda, 1 = primary slave,
    /// 2 = secondary master, 3 = secondary slave).
    pub fn attach_drive(&mut self, slot: usize, drive: Drive) {
        // A replay would not have the new image.
        self.end_recording();
        self.board.borrow().ide.borrow_mut().attach(slot, drive);
    }

    /// Insert a disc into the CD-ROM drive at `slot`; false if there is no CD-ROM drive there.
    pub fn insert_cdrom(&mut self, slot: usize, disc: Box<dyn BlockBackend>) -> bool {
        self.end_recording();
        match self.board.borrow().ide.borrow_mut().drive_mut(slot) {
            Some(Drive::Atapi(cd)) => {
                cd.insert(disc);
                true
            }
            _ => false,
        }
    }

    /// Put a diskette into floppy drive `n` (0 = A:, 1 = B:) or take it out (`None`). The
    /// CMOS drive types follow (a drive with a diskette is one of its size).
    pub fn insert_floppy(&mut self, n: usize, disk: Option<Diskette>) {
        self.end_recording();
        let b = self.board.borrow();
        let mut fdc = b.fdc.borrow_mut();
        fdc.insert(n, disk);
        let (a, bt) = (fdc.cmos_type(0), fdc.cmos_type(1));
        b.rtc.borrow_mut().set_floppy_types(a, bt);
    }

    /// Eject the disc of the CD-ROM drive at `slot` (the host's eject button).
    pub fn eject_cdrom(&mut self, slot: usize) -> bool {
        self.end_recording();
        match self.board.borrow().ide.borrow_mut().drive_mut(slot) {
            Some(Drive::Atapi(cd)) => {
                cd.eject();
                true
            }
            _ => false,
        }
    }

    /// The host has the data a block backend answered "pending" for: pending drive reads are
    /// retried (and complete with their interrupt if the data is there now).
    pub fn storage_wake(&mut self) {
        self.record(|at| Event::StorageWake { at });
        self.with_device(|b| b.ide.clone(), |ide, ctx| ide.wake(ctx));
    }

    /// A device of the board, with a device context at the current virtual time; the IRQ lines
    /// it drives reach the PIC afterwards (as after a guest access).
    fn with_device<T: ?Sized, R>(
        &mut self,
        which: impl FnOnce(&Board) -> Shared<T>,
        f: impl FnOnce(&mut T, &mut DevCtx) -> R,
    ) -> R {
        let now = self.now();
        let mut b = self.board.borrow_mut();
        b.now = b.now.max(now);
        let device = which(&b);
        b.on_device(&device, f)
    }

    /// The UART at index `n` (0 = COM1, 1 = COM2).
    fn with_uart<R>(&mut self, n: usize, f: impl FnOnce(&mut Uart, &mut DevCtx) -> R) -> R {
        self.with_device(
            |b| {
                if n == 0 {
                    b.com1.clone()
                } else {
                    b.com2.clone()
                }
            },
            f,
        )
    }

    /// The keyboard controller.
    fn with_i8042<R>(&mut self, f: impl FnOnce(&mut I8042, &mut DevCtx) -> R) -> R {
        self.with_device(|b| b.i8042.clone(), f)
    }

    /// A key of the PS/2 keyboard goes down or up: `make` is its scan code set 2 make sequence
    /// (see [`crate::keymap`]). A guest that does not read fast enough loses keys as with a
    /// real keyboard (its buffer overruns): hosts that must not lose any pace them with
    /// [`crate::input::HostInput`].
    pub fn key_event(&mut self, make: &[u8], pressed: bool) {
        self.record(|at| Event::Key {
            at,
            make: make.to_vec(),
            pressed,
        });
        self.with_i8042(|kc, ctx| kc.key_event(make, pressed, ctx));
    }

    /// The PS/2 mouse moved (`dx` right, `dy` down, `dz` wheel down, in counts) and/or its
    /// buttons changed (bit 0 left, 1 right, 2 middle, 3 fourth, 4 fifth).
    pub fn mouse_move(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.record(|at| Event::Mouse {
            at,
            dx,
            dy,
            dz,
            buttons,
        });
        self.with_i8042(|kc, ctx| kc.mouse_move(dx, dy, dz, buttons, ctx));
    }

    /// Have the BIOS offer its boot menu: SeaBIOS prints "Press ESC for boot menu." and waits
    /// `wait_ms` for the key (when there is more than one device to boot from). Before the
    /// machine runs; a machine without firmware ignores it.
    pub fn set_boot_menu(&mut self, wait_ms: u16) {
        self.board
            .borrow()
            .fw_cfg
            .borrow_mut()
            .set_boot_menu(wait_ms);
    }

    /// Characters the guest sent on serial port `n` (0 = COM1, 1 = COM2) since the last call.
    pub fn serial_output(&mut self, n: usize) -> Vec<u8> {
        let out = self.with_uart(n, |u, _| u.take_output());
        if let Some(r) = self.recorder.as_mut().filter(|_| n == 0) {
            r.output(&out);
        }
        out
    }

    /// What the guest wrote to the debug console (ports 0xE9 and 0x402) since the last call.
    pub fn debug_output(&mut self) -> Vec<u8> {
        self.with_device(|b| b.debugcon.clone(), |d, _| d.take_output())
    }

    /// Whether serial port `n` can take another character from the host now.
    pub fn serial_can_receive(&mut self, n: usize) -> bool {
        self.with_uart(n, |u, _| u.can_receive())
    }

    /// A character arrives on serial port `n`. Returns false (and drops it) if the receiver is
    /// full: callers that must not lose input check [`Machine::serial_can_receive`] first.
    pub fn serial_input(&mut self, n: usize, byte: u8) -> bool {
        let at = self.cpu.instructions;
        let taken = self.with_uart(n, |u, ctx| {
            let ok = u.can_receive();
            if ok {
                u.receive_byte(byte, ctx);
            }
            ok
        });
        if taken {
            self.record(|_| Event::Serial {
                at,
                port: n as u8,
                byte,
            });
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine::new(MachineConfig {
            ram_bytes: 1 << 20,
            ..MachineConfig::default()
        })
    }

    /// The clock's three ways to the same product (both factors below 2^32; a product that
    /// fits u64; one that does not) agree with exact 128-bit arithmetic, and saturate.
    #[test]
    fn the_clock_converts_instructions_to_nanoseconds_exactly_at_every_magnitude() {
        let exact = |c: &Clock, n: u64| {
            let ps = u128::from(n - c.base_instructions) * u128::from(c.ps_per_instruction);
            u64::try_from(u128::from(c.base_ns) + ps / 1000).unwrap_or(u64::MAX)
        };
        for ps_per_instruction in [1, 999, 1_000, 7_123, 200_000, u64::from(u32::MAX), 1 << 40] {
            let c = Clock {
                base_ns: 5_000,
                base_instructions: 100,
                ps_per_instruction,
            };
            for run in [
                0,
                1,
                999,
                123_456_789,
                u64::from(u32::MAX),
                1 << 32,
                1 << 45,
                u64::MAX - 100,
            ] {
                assert_eq!(
                    c.at(100 + run),
                    exact(&c, 100 + run),
                    "{ps_per_instruction} ps, {run}"
                );
            }
            // Before the base: no time has passed.
            assert_eq!(c.at(50), 5_000);
        }
    }

    /// Start the CPU in real mode at 0000:1000 with `code` there.
    fn with_code(code: &[u8]) -> Machine {
        let mut m = machine();
        m.cpu.mem.load(0x1000, code);
        m.cpu.segs[crate::cpu::Segment::CS as usize] = crate::cpu::SegCache::real(0);
        m.cpu.eip = 0x1000;
        m
    }

    /// The A20 gate moves with the OUT that moves it, not at the end of the slice: code that
    /// opens it writes above 1 MiB with its next instruction (as SYSLINUX does right after
    /// a boot loader closed the gate), and closing it wraps the next write to 0.
    #[test]
    fn the_a20_gate_moves_at_the_out_that_moves_it() {
        #[rustfmt::skip]
        let code = [
            0xFA, 0x31, 0xC0, 0x8E, 0xD8,       // cli; xor ax, ax; mov ds, ax
            0xB8, 0xFF, 0xFF, 0x8E, 0xC0,       // mov es, 0xFFFF
            0xE4, 0x92, 0x0C, 0x02, 0xE6, 0x92, // port A: open the gate
            0x26, 0xC6, 0x06, 0x10, 0x00, 0xAA, // mov byte [es:0x10], 0xAA (0x100000)
            0x24, 0xFD, 0xE6, 0x92,             // port A: close the gate
            0x26, 0xC6, 0x06, 0x20, 0x00, 0x55, // mov byte [es:0x20], 0x55 (0x100010: 0x10)
            0xF4,                               // hlt
        ];
        let mut m = Machine::new(MachineConfig {
            ram_bytes: 2 << 20,
            ..MachineConfig::default()
        });
        m.cpu.set_a20(false);
        m.cpu.mem.load(0x1000, &code);
        m.cpu.segs[crate::cpu::Segment::CS as usize] = crate::cpu::SegCache::real(0);
        m.cpu.eip = 0x1000;
        m.run(code.len() as u64);
        let ram = &m.cpu.mem.ram;
        assert_eq!((ram[0x100000], ram[0]), (0xAA, 0), "the open gate's write");
        assert_eq!(
            (ram[0x10], ram[0x100010]),
            (0x55, 0),
            "the closed gate's write"
        );
    }

    /// A boot sector read as a BIOS reads it: the guest programs DMA channel 2 and sends READ
    /// DATA to the floppy controller, polling its status; the sector lands at 0x7C00 and the
    /// result bytes say it ended normally, at terminal count.
    #[test]
    fn a_guest_reads_a_floppy_sector_by_dma() {
        #[rustfmt::skip]
        let mut m = with_code(&[
            0xFA, 0xFC,                   // cli ; cld
            0xB0, 0x1C, 0xBA, 0xF2, 0x03, 0xEE, // DOR: out of reset, DMA gate, motor A
            0xB0, 0xC0, 0xE6, 0xD6,       // DMA2 mode: channel 4 cascade
            0xB0, 0x00, 0xE6, 0xD4,       // DMA2: unmask channel 4
            0xB0, 0x06, 0xE6, 0x0A,       // mask channel 2
            0xB0, 0x00, 0xE6, 0x0C,       // clear the flip-flop
            0xB0, 0x46, 0xE6, 0x0B,       // channel 2: single, write to memory
            0xB0, 0x00, 0xE6, 0x04,       // address 0x7C00
            0xB0, 0x7C, 0xE6, 0x04,
            0xB0, 0x00, 0xE6, 0x81,       // page 0
            0xB0, 0xFF, 0xE6, 0x05,       // count 511
            0xB0, 0x01, 0xE6, 0x05,
            0xB0, 0x02, 0xE6, 0x0A,       // unmask channel 2
            0xBE, 0x00, 0x12,             // mov si, 0x1200 (the command)
            0xB9, 0x09, 0x00,             // mov cx, 9
            0xBA, 0xF4, 0x03,             // send: mov dx, 0x3F4
            0xEC, 0x24, 0xC0, 0x3C, 0x80, 0x75, 0xF9, // until RQM and not DIO
            0xBA, 0xF5, 0x03, 0xAC, 0xEE, // out 0x3F5, [si++]
            0xE2, 0xEF,                   // loop send
            0xBF, 0x00, 0x30,             // mov di, 0x3000 (the results)
            0xB9, 0x07, 0x00,             // mov cx, 7
            0xBA, 0xF4, 0x03,             // result: mov dx, 0x3F4
            0xEC, 0x24, 0xC0, 0x3C, 0xC0, 0x75, 0xF9, // until RQM and DIO
            0xBA, 0xF5, 0x03, 0xEC, 0xAA, // [di++] = in 0x3F5
            0xE2, 0xEF,                   // loop result
            0xF4,                         // hlt
        ]);
        // READ DATA, MFM: drive 0 head 0, C0 H0 R1, 512 bytes, EOT 18.
        m.cpu
            .mem
            .load(0x1200, &[0x46, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF]);
        let mut image = vec![0u8; 1_474_560];
        for (i, b) in image.iter_mut().enumerate().take(512) {
            *b = (i * 5 + 1) as u8;
        }
        let disk = Diskette::new(
            Box::new(crate::block::MemBackend::new(image.clone())),
            false,
        );
        m.insert_floppy(0, Some(disk.unwrap()));
        m.run(100_000);
        assert!(m.cpu.halted, "the program finished");
        assert_eq!(m.cpu.mem.ram[0x7C00..0x7E00], image[..512]);
        assert_eq!(m.cpu.mem.ram[0x3000..0x3007], [0x00, 0, 0, 0, 0, 2, 2]);
        // The CMOS says A: is a 1.44 MB drive (type 4) and B: is absent.
        let cmos = m.board().rtc.clone();
        assert_eq!(cmos.borrow().nvram(0x10), 0x40);
        assert_eq!(cmos.borrow().nvram(0x14) & 0xC1, 0x01, "one diskette drive");
    }

    /// A guest asks fw_cfg for the RAM size by DMA (as SeaBIOS does) and reads the answer with
    /// the very next instruction: the transfer is done when the OUT that starts it retires.
    #[test]
    fn fw_cfg_dma_is_done_when_the_out_that_starts_it_retires() {
        #[rustfmt::skip]
        let mut m = with_code(&[
            0xBA, 0x14, 0x05,                         // mov dx, 0x514
            0x66, 0x31, 0xC0,                         // xor eax, eax
            0x66, 0xEF,                               // out dx, eax (address, high half)
            0xBA, 0x18, 0x05,                         // mov dx, 0x518
            0x66, 0xB8, 0x00, 0x00, 0x30, 0x00,       // mov eax, 0x00300000 (0x3000, BE)
            0x66, 0xEF,                               // out dx, eax (low half: go)
            0x66, 0xA1, 0x00, 0x31,                   // mov eax, [0x3100]
            0x66, 0x8B, 0x1E, 0x00, 0x30,             // mov ebx, [0x3000] (control)
            0xF4,                                     // hlt
        ]);
        // The descriptor: select RAM_SIZE and read 8 bytes to 0x3100.
        let control = (u32::from(fw_cfg::RAM_SIZE) << 16) | 0x08 | 0x02;
        let mut desc = control.to_be_bytes().to_vec();
        desc.extend_from_slice(&8u32.to_be_bytes());
        desc.extend_from_slice(&0x3100u64.to_be_bytes());
        m.cpu.mem.load(0x3000, &desc);
        m.cpu.mem.load(0x3100, &[0xEE; 8]);
        m.run(100);
        assert!(m.cpu.halted);
        let ram = m.config().ram_bytes as u64;
        assert_eq!(m.cpu.regs[crate::cpu::EAX], ram as u32);
        assert_eq!(
            m.cpu.regs[crate::cpu::EBX],
            0,
            "the control word cleared: done"
        );
        assert_eq!(m.cpu.mem.ram[0x3100..0x3108], ram.to_le_bytes());
    }

    /// The guest moves the framebuffer's BAR and stores to the new place with the very next
    /// instruction, in the same CPU slice: the store reaches the display, and the old place
    /// decodes nothing.
    #[test]
    fn a_moved_framebuffer_answers_at_its_new_place_from_the_next_instruction() {
        let mut m = with_code(&[
            0xBA, 0xF8, 0x0C, // mov dx, 0xCF8
            0x66, 0xB8, 0x10, 0x10, 0x00, 0x80, // mov eax, 0x80001010 (00:02.0, BAR0)
            0x66, 0xEF, // out dx, eax
            0xB2, 0xFC, // mov dl, 0xFC
            0x66, 0xB8, 0x00, 0x00, 0x00, 0xD0, // mov eax, 0xD0000000
            0x66, 0xEF, // out dx, eax
            0x66, 0xB8, 0x44, 0x33, 0x22, 0x11, // mov eax, 0x11223344
            0x67, 0x66, 0xA3, 0x08, 0x00, 0x00, 0xD0, // mov [0xD0000008], eax
            0xF4, // hlt
        ]);
        // Unreal mode: DS reaches the whole 4 GiB.
        let mut ds = crate::cpu::SegCache::real(0);
        ds.limit = u32::MAX;
        ds.compute_ranges();
        m.cpu.segs[crate::cpu::Segment::DS as usize] = ds;
        let before = m.cpu.instructions;
        assert!(matches!(m.run(100), Stop::Idle { .. }));
        assert_eq!(m.cpu.instructions - before, 9, "one slice, to the HLT");
        let vga = m.board().vga.clone();
        assert_eq!(vga.borrow_mut().lfb_read(8, 4), 0x1122_3344);
        assert_eq!(m.cpu.mem.kind(0xD000_0000), PageKind::Mmio);
        assert_ne!(m.cpu.mem.kind(vga::LFB_DEFAULT), PageKind::Mmio);
        let cpu = &mut m.cpu;
        assert_eq!(
            cpu.mem.read_phys(&mut *cpu.bus, vga::LFB_DEFAULT + 8, 4),
            u32::MAX
        );
        assert_eq!(
            m.board().mmio_ranges(),
            vec![
                (vga::LEGACY_BASE, vga::LEGACY_LEN),
                (0xD000_0000, vga::VRAM_SIZE as u32)
            ]
        );
        // A reset puts the framebuffer back where BAR0 starts.
        m.reset();
        assert_eq!(m.cpu.mem.kind(vga::LFB_DEFAULT), PageKind::Mmio);
        assert_ne!(m.cpu.mem.kind(0xD000_0000), PageKind::Mmio);
    }

    #[test]
    fn unmapped_ports_read_all_ones_and_devices_answer() {
        // in al,0x10 ; mov dx,0x3FD ; in al,dx (LSR: THR empty) ; mov bl,al ; in al,0x10 ; hlt
        let mut m = with_code(&[
            0xE4, 0x10, 0x88, 0xC1, 0xBA, 0xFD, 0x03, 0xEC, 0x88, 0xC3, 0xF4,
        ]);
        assert!(matches!(m.run(100), Stop::Idle { .. }));
        assert_eq!(m.cpu.regs[crate::cpu::ECX] & 0xFF, 0xFF);
        assert_eq!(m.cpu.regs[crate::cpu::EBX] & 0x60, 0x60);
    }

    #[test]
    fn idle_time_is_not_skipped_while_a_drive_waits_for_the_host() {
        use crate::block::{Stream, StreamConfig};
        use crate::dev::ide::{AtaDisk, Drive};
        // Mask the PIC, start PIT channel 0 (a deadline to skip to), then READ SECTORS of LBA 0
        // on the primary master and wait: sti ; hlt ; jmp hlt.
        let mut m = with_code(&[
            0xB0, 0xFF, 0xE6, 0x21, 0xB0, 0x34, 0xE6, 0x43, 0xB0, 0x00, 0xE6, 0x40, 0xE6, 0x40,
            0xBA, 0xF6, 0x01, 0xB0, 0xE0, 0xEE, 0xBA, 0xF2, 0x01, 0xB0, 0x01, 0xEE, 0xBA, 0xF7,
            0x01, 0xB0, 0x20, 0xEE, 0xFB, 0xF4, 0xEB, 0xFD,
        ]);
        let stream = Stream::new(1 << 20, StreamConfig::default());
        m.attach_drive(0, Drive::Ata(AtaDisk::new(stream.backend()).unwrap()));
        let before = m.now();
        // The guest halts with the read pending: the run ends instead of jumping to the PIT's
        // deadline, however many times the host asks.
        for _ in 0..3 {
            assert!(matches!(m.run(1000), Stop::Idle { .. }));
        }
        assert!(m.now() - before < 1_000_000, "virtual time stood still");
        let reqs = stream.take_requests();
        assert_eq!(reqs.len(), 1);
        stream.complete(
            reqs[0].id,
            &vec![0x5A; (reqs[0].end - reqs[0].start) as usize],
        );
        assert!(stream.take_wake());
        m.storage_wake();
        // Data there: the drive has DRQ set, and idle time passes again (the PIT fires).
        let mut status = 0;
        m.cpu
            .mem
            .load(0x1100, &[0xBA, 0xF7, 0x01, 0xEC, 0x88, 0xC3, 0xFA, 0xF4]);
        m.cpu.eip = 0x1100;
        m.cpu.halted = false;
        if let Stop::Idle { .. } = m.run(100) {
            status = m.cpu.regs[crate::cpu::EBX] & 0xFF;
        }
        assert_eq!(status & 0x88, 0x08, "status {status:#x}: DRQ, not BSY");
        let t = m.now();
        m.cpu.mem.load(0x1200, &[0xFB, 0xF4, 0xEB, 0xFD]);
        m.cpu.eip = 0x1200;
        m.cpu.halted = false;
        m.run(1000);
        assert!(
            m.now() > t + 10_000_000,
            "idle time skipped to the PIT deadline"
        );
    }

    #[test]
    fn serial_output_reaches_the_host() {
        // mov dx,0x3FB ; mov al,3 ; out dx,al (8N1) ; mov dx,0x3F8 ; mov al,'A' ; out dx,al ;
        // mov al,'B' ; out dx,al ; cli ; hlt
        let mut m = with_code(&[
            0xBA, 0xFB, 0x03, 0xB0, 0x03, 0xEE, 0xBA, 0xF8, 0x03, 0xB0, b'A', 0xEE, 0xB0, b'B',
            0xEE, 0xFA, 0xF4,
        ]);
        assert_eq!(
            m.run(100),
            Stop::Idle {
                next_deadline: None
            }
        );
        assert_eq!(m.serial_output(0), b"AB");
    }

    #[test]
    fn x87_error_without_cr0_ne_raises_irq13_until_port_f0() {
        // fninit ; fldcw [0x2000] (zero-divide unmasked) ; fld1 ; fldz ; fdivp ; fld1 ; hlt
        let mut m = with_code(&[
            0xDB, 0xE3, 0xD9, 0x2E, 0x00, 0x20, 0xD9, 0xE8, 0xD9, 0xEE, 0xDE, 0xF9, 0xD9, 0xE8,
            0xF4,
        ]);
        m.cpu.mem.load(0x2000, &0x037Bu16.to_le_bytes());
        assert!(matches!(m.run(100), Stop::Idle { .. }));
        assert!(m.board.borrow().irq.get(13), "FERR# reached IRQ13");
        assert_eq!(m.cpu.eip, 0x100F, "no #MF with CR0.NE clear");
        // out 0xF0,al ; hlt: the handler's acknowledgement clears the latch.
        m.cpu.mem.load(0x1100, &[0xE6, 0xF0, 0xF4]);
        m.cpu.eip = 0x1100;
        m.cpu.halted = false;
        assert!(matches!(m.run(100), Stop::Idle { .. }));
        assert!(!m.board.borrow().irq.get(13));
    }

    #[test]
    fn port_92_reset_resets_the_machine() {
        // mov al,1 ; out 0x92,al ; jmp $
        let mut m = with_code(&[0xB0, 0x01, 0xE6, 0x92, 0xEB, 0xFE]);
        assert_eq!(m.run(1000), Stop::Reset(ResetCause::Guest));
        assert_eq!(m.cpu.eip, 0xFFF0);
    }

    #[test]
    fn triple_fault_resets_the_machine() {
        // lidt [0x2000] (limit 0) ; int3  → #GP → #DF → shutdown
        let mut m = with_code(&[0x0F, 0x01, 0x1E, 0x00, 0x20, 0xCC]);
        m.cpu.mem.load(0x2000, &[0, 0, 0, 0, 0, 0]);
        assert_eq!(m.run(1000), Stop::Reset(ResetCause::TripleFault));
    }

    /// Program the PIC (vector base 0x08), the PIT (mode 2, 10 ms), point IVT 0x08 at a handler
    /// that counts in BX and sends EOI, then loop on sti; hlt.
    fn ticking_machine() -> Machine {
        #[rustfmt::skip]
        let code = [
            0xB0, 0x11, 0xE6, 0x20,       // ICW1
            0xB0, 0x08, 0xE6, 0x21,       // ICW2: vectors 0x08..
            0xB0, 0x04, 0xE6, 0x21,       // ICW3
            0xB0, 0x01, 0xE6, 0x21,       // ICW4
            0xB0, 0xFE, 0xE6, 0x21,       // mask all but IRQ0
            0xB0, 0x34, 0xE6, 0x43,       // PIT ch0 mode 2
            0xB0, 0x9C, 0xE6, 0x40,       // count 11932 (10 ms) low
            0xB0, 0x2E, 0xE6, 0x40,       // high
            0xFB, 0xF4, 0xEB, 0xFC,       // sti ; hlt ; jmp back to sti
        ];
        let mut m = with_code(&code);
        // IVT entry 8 → 0000:0x1100: inc bx ; mov al,0x20 ; out 0x20,al ; iret
        m.cpu
            .mem
            .load(0x1100, &[0x43, 0xB0, 0x20, 0xE6, 0x20, 0xCF]);
        m.cpu.mem.load(8 * 4, &[0x00, 0x11, 0x00, 0x00]);
        m.cpu.regs[crate::cpu::ESP] = 0x8000;
        m
    }

    #[test]
    fn pit_interrupt_wakes_hlt_and_time_skips() {
        let mut m = ticking_machine();
        // One call skips at most MAX_IDLE_SKIP_PER_RUN_NS of idle time (the 10 ms ticks wake
        // the guest in between), so the host sees the machine again after a few ticks.
        m.run(2000);
        assert!(
            (MAX_IDLE_SKIP_PER_RUN_NS..MAX_IDLE_SKIP_PER_RUN_NS + 10_000_000).contains(&m.now()),
            "now = {}",
            m.now()
        );
        while m.cpu.instructions < 2000 {
            m.run(2000 - m.cpu.instructions);
        }
        let ticks = m.cpu.regs[crate::cpu::EBX];
        // Each tick costs a handful of instructions; time is skipped while halted.
        assert!(ticks >= 50, "ticks = {ticks}");
        let now = m.now();
        assert!(
            now >= u64::from(ticks - 1) * 10_000_000,
            "now = {now} ticks = {ticks}"
        );
    }

    #[test]
    fn realtime_follows_the_host_clock_without_losing_ticks() {
        let mut m = ticking_machine();
        // The guest programs the PIT at once; then the host looks in rarely: at 35 ms, 135 ms.
        // Virtual time may run up to REALTIME_LEAD_NS ahead of the host, not more.
        m.run_realtime(0, 1_000_000);
        for (host, ticks) in [(35_000_000, 3..=4), (135_000_000, 13..=14)] {
            m.run_realtime(host, 1_000_000);
            let now = m.now();
            assert!(
                (host..=host + REALTIME_LEAD_NS).contains(&now),
                "now = {now}"
            );
            let got = m.cpu.regs[crate::cpu::EBX];
            assert!(ticks.contains(&got), "{got} ticks at {now} ns");
        }
        // A long suspension is forgiven, not skipped: virtual time goes on from where it was,
        // up to MAX_CATCH_UP_NS of it is caught up, and no tick is lost.
        let before = m.now();
        m.run_realtime(100_000_000_000, 1_000_000);
        let now = m.now();
        assert!(
            (before..=before + MAX_CATCH_UP_NS + REALTIME_LEAD_NS).contains(&now),
            "now = {now}"
        );
        assert_eq!(m.forgiven_ns(), 100_000_000_000 - before - MAX_CATCH_UP_NS);
        let ticks = u64::from(m.cpu.regs[crate::cpu::EBX]);
        assert!(
            ticks + 1 >= now / 10_000_000,
            "{ticks} ticks in {now} ns of virtual time"
        );
        // The host's later readings are taken with what was forgiven.
        m.run_realtime(100_050_000_000, 1_000_000);
        let now = m.now();
        let given = 100_050_000_000 - m.forgiven_ns();
        assert!(
            (given..=given + REALTIME_LEAD_NS).contains(&now),
            "now = {now}"
        );
    }

    /// The ticking machine running, instead of `sti; hlt`, a loop of `off` instructions with
    /// interrupts off and then `on` with them on, in real time on a model host that takes
    /// 100 ns per instruction (10 MIPS) and sleeps while the guest is ahead of it. Returns the
    /// ticks the guest counted, its virtual time and the host's time after `instructions`.
    fn run_interrupt_windows(off: u32, on: u32, instructions: u64) -> (u64, Nanos, Nanos) {
        let mut m = ticking_machine();
        let [o0, o1, o2, o3] = off.to_le_bytes();
        let [n0, n1, n2, n3] = on.to_le_bytes();
        #[rustfmt::skip]
        let windows = [
            0xFA,                               // cli
            0x66, 0xB9, o0, o1, o2, o3,         // mov ecx, off
            0x67, 0xE2, 0xFD,                   // loop $ (ECX)
            0xFB,                               // sti
            0x66, 0xB9, n0, n1, n2, n3,         // mov ecx, on
            0x67, 0xE2, 0xFD,                   // loop $ (ECX)
            0xEB, 0xEA,                         // jmp to the cli
        ];
        // After the PIC and PIT setup (32 bytes), instead of its sti/hlt.
        m.cpu.mem.load(0x1000 + 32, &windows);
        let mut host: Nanos = 0;
        let mut last = m.now();
        while m.cpu.instructions < instructions {
            let before = m.cpu.instructions;
            m.run_realtime(host, 100_000);
            let executed = m.cpu.instructions - before;
            let now = m.now();
            assert!(
                now - last <= executed * MAX_PS_PER_INSTRUCTION / 1000 + 1,
                "virtual time jumped {} ns over {executed} instructions",
                now - last
            );
            assert_eq!(m.cpu.tsc(), now / TSC_NS, "the TSC counts virtual time");
            last = now;
            host = (host + executed * 100).max(now);
        }
        (u64::from(m.cpu.regs[crate::cpu::EBX]), m.now(), host)
    }

    /// On a host ten times slower than the clock's configured pace, code that keeps interrupts
    /// off for 15 ms of host time at a time, then on as long: at the paced rate a window
    /// spans one or two timer periods, and the second tick would be lost (a PIC request
    /// latches once). While a request waits the clock runs at its fastest rate: the guest
    /// counts every timer period of its virtual time, and its clock still follows the host's.
    #[test]
    fn realtime_loses_no_tick_to_code_that_keeps_interrupts_off() {
        let (ticks, now, host) = run_interrupt_windows(150_000, 150_000, 30_000_000);
        assert!(
            ticks + 1 >= now / 10_000_000,
            "{ticks} ticks in {now} ns of virtual time: ticks were lost"
        );
        assert!(
            now.abs_diff(host) < host / 20,
            "virtual {now} ns, host {host} ns"
        );
    }

    /// Interrupts off for 20 ms of host time at a time, two timer periods: rather than lose
    /// the second tick of each window, the guest's clock slows down.
    #[test]
    fn realtime_slows_the_guest_clock_rather_than_lose_ticks() {
        let (ticks, now, host) = run_interrupt_windows(200_000, 10, 20_000_000);
        assert!(
            ticks + 1 >= now / 10_000_000,
            "{ticks} ticks in {now} ns of virtual time: ticks were lost"
        );
        assert!(now < host * 3 / 4, "virtual {now} ns, host {host} ns");
    }

    /// A busy guest whose code turns six times faster for the host (as from a shell's fork and
    /// exec to a tight loop): the clock's rate, set for the slow code, runs virtual time six
    /// times too fast, and the CPU stops at the lead. A model host like the page's worker
    /// (slices of at most 1.5 ms, never sleeping, 50 us between calls) must find the new rate
    /// within a few milliseconds instead of running the guest only as fast as its clock.
    #[test]
    fn realtime_a_guest_turning_to_fast_code_soon_runs_flat_out() {
        let mut m = with_code(&[0xFA, 0xEB, 0xFE]);
        let mut host: Nanos = 0;
        let mut busy: Nanos = 0;
        for (ps, until) in [(12_000, 300_000_000), (2_000, 400_000_000)] {
            while host < until {
                let before = m.cpu.instructions;
                m.run_realtime(host, 1_500_000 * 1000 / ps);
                let executed = m.cpu.instructions - before;
                host += executed * ps / 1000 + 50_000;
                if ps == 2_000 {
                    busy += executed * ps / 1000;
                }
            }
        }
        // The first 100 ms of fast code: 1.5 ms of every 1.55 ms would be 96.8%.
        let share = busy as f64 / (host - 300_000_000) as f64;
        assert!(
            share > 0.9,
            "the CPU ran {:.1}% of the host's time",
            share * 100.0
        );
        assert!(m.now().abs_diff(host) <= REALTIME_LEAD_NS);
    }

    #[test]
    fn realtime_busy_guest_time_is_steady_and_the_cpu_runs_flat_out() {
        // cli ; jmp $ : a guest that never halts. A model host runs it in 50k-instruction slices
        // at 7 ns per instruction (143 MIPS), and sleeps whenever the guest is ahead of its
        // clock. The configured rate (10 ns per instruction, 100 MIPS) is too slow for this host:
        // the clock's rate must adapt so that the host hardly sleeps, and virtual time must
        // never jump while it does.
        let mut m = with_code(&[0xFA, 0xEB, 0xFE]);
        let mut host: Nanos = 0;
        let mut slept_late: Nanos = 0;
        let mut last = (m.now(), m.cpu.instructions);
        for round in 0..6000 {
            m.run_realtime(host, 50_000);
            let (now, instr) = (m.now(), m.cpu.instructions);
            let executed = instr - last.1;
            assert!(
                now - last.0 <= executed * MAX_PS_PER_INSTRUCTION / 1000 + 1,
                "virtual time jumped {} ns over {executed} instructions",
                now - last.0
            );
            // The TSC counts virtual time at 100 MHz.
            assert_eq!(m.cpu.tsc(), now / TSC_NS);
            host += executed * 7;
            if now > host {
                if round >= 5000 {
                    slept_late += now - host;
                }
                host = now;
            }
            last = (now, instr);
        }
        // Over the last 1000 slices (about 350 ms of host time) the host slept under 15% of it.
        assert!(slept_late < 50_000_000, "the host slept {slept_late} ns");
        assert!(m.now().abs_diff(host) <= REALTIME_LEAD_NS);
    }
}
