//! `wasm86 trace`: boot as the default command does (the same boot options, deterministic
//! time), run to a starting point, then print each instruction the CPU executes, one line each:
//!
//! ```text
//!    1234567  0010:c10a2f3b  c10a2f3b  8b 43 04              mov eax,[ebx+4]
//! ```
//!
//! the instructions retired before it, CS:EIP (EIP in 4 digits in 16-bit code), the linear
//! address, the bytes and the Intel-syntax disassembly. An interrupt or exception delivered
//! between two instructions gets a line of its own (`-- interrupt 0x20 --`), not counted in
//! `--count`; the next line is the handler's first instruction. With `--registers` each
//! instruction is followed by the registers it changed; with `--counters` the machine's event
//! counters for the traced instructions follow on stderr.
//!
//! The starting point is `--from N` (N instructions retired), or `--until TEXT`: the instruction
//! after the one that completed TEXT on the serial console. The run there is the default
//! command's, slice for slice, so the trace shows the states that run goes through. For
//! `--until` the run is made twice: once in whole slices to find the slice in which TEXT
//! appeared, then again (the same, being deterministic) up to that slice and through it
//! instruction by instruction, to the exact one. Disks must be image files (a download's timing
//! could change the run). The guest's serial output is not shown.
//!
//! Exit codes: 0 when the trace was printed (or ended early because the CPU halted with nothing
//! to wake it, or the guest reset: stderr says so), 1 on errors (bad options, a bad image, a
//! CPU halted for good before the starting point), 2 when `--timeout` ran out, 3 when the guest
//! reset before the starting point.

use crate::console::{build_machine, BootArgs, Watch};
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use wasm86::inspect::registers::{changes, Registers};
use wasm86::inspect::Line;
use wasm86::machine::inspect::Event;
use wasm86::machine::{Machine, ResetCause, Stop};

/// The default command's slice (console.rs): the run to the starting point makes the same
/// `Machine::run` calls, so it goes through the same states.
const SLICE: u64 = 2_000_000;

/// Events between two looks at the clock for `--timeout` while stepping.
const CLOCK_EVERY: u64 = 4096;

/// While tracing, the most idle virtual time (in the machine's 50 ms pieces) the CPU may wait
/// halted for an interrupt before the trace ends: a minute.
const MAX_IDLE_WAITS: u32 = 1200;

#[derive(clap::Args, Debug)]
#[command(
    mut_arg("until", |a| a.help(
        "Start tracing right after the instruction that completed TEXT on the serial console \
         (instead of --from; exit 3 if the guest resets first)"
    )),
    mut_arg("timeout", |a| a.help("Exit 2 when this much wall time has passed")),
    mut_arg("counters", |a| a.help(
        "After the trace, print the machine's event counters for the traced instructions on \
         stderr"
    )),
    mut_arg("realtime", |a| a.hide(true)),
    mut_arg("keep_running", |a| a.hide(true)),
    mut_arg("record", |a| a.hide(true)),
    mut_arg("replay", |a| a.hide(true)),
    mut_arg("save_state", |a| a.hide(true)),
    mut_arg("write_back", |a| a.hide(true)),
    mut_arg("screenshot", |a| a.hide(true)),
    mut_arg("screen_text", |a| a.hide(true)),
    mut_arg("debugcon", |a| a.hide(true)),
    mut_arg("until_screen", |a| a.hide(true)),
    mut_arg("stats", |a| a.hide(true))
)]
pub struct TraceArgs {
    /// Start tracing when N instructions have retired [default: 0].
    #[arg(long, value_name = "N", conflicts_with = "until")]
    pub from: Option<u64>,
    /// How many instructions to trace.
    #[arg(long, value_name = "M", default_value_t = 100)]
    pub count: u64,
    /// After each instruction, print the registers it changed.
    #[arg(long)]
    pub registers: bool,
    /// The default command's boot options (those a trace cannot honour are refused: see
    /// `check_options`).
    #[command(flatten)]
    pub boot: BootArgs,
}

/// Why a trace did not happen.
enum Failure {
    /// Bad options or images, or a guest that cannot get to the starting point (exit 1).
    Error(String),
    /// `--timeout` ran out (exit 2).
    Timeout,
    /// The guest reset before the starting point (exit 3).
    Reset(String),
}

impl From<String> for Failure {
    fn from(msg: String) -> Failure {
        Failure::Error(msg)
    }
}

/// `--timeout`: when the wall time runs out.
struct Deadline(Option<Instant>);

impl Deadline {
    fn check(&self) -> Result<(), Failure> {
        match self.0 {
            Some(d) if Instant::now() >= d => Err(Failure::Timeout),
            _ => Ok(()),
        }
    }
}

/// Run `wasm86 trace`.
pub fn run(args: &TraceArgs) -> ExitCode {
    match trace(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(msg)) => {
            eprintln!("wasm86 trace: {msg}");
            ExitCode::FAILURE
        }
        Err(Failure::Timeout) => {
            eprintln!(
                "wasm86 trace: timeout after {:.1} s",
                args.boot.timeout.unwrap_or(0.0)
            );
            ExitCode::from(2)
        }
        Err(Failure::Reset(msg)) => {
            eprintln!("wasm86 trace: {msg}");
            ExitCode::from(3)
        }
    }
}

/// Refuse the boot options a trace cannot honour.
fn check_options(boot: &BootArgs) -> Result<(), String> {
    let unsupported = [
        (
            boot.realtime,
            "--realtime (a trace runs in deterministic time)",
        ),
        (boot.keep_running, "--keep-running"),
        (boot.record.is_some(), "--record"),
        (boot.replay.is_some(), "--replay"),
        (boot.save_state.is_some(), "--save-state"),
        (boot.write_back, "--write-back"),
        (boot.screenshot.is_some(), "--screenshot"),
        (boot.screen_text, "--screen-text"),
        (boot.debugcon.is_some(), "--debugcon"),
        (boot.until_screen.is_some(), "--until-screen"),
        (boot.stats, "--stats"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(given, _)| *given) {
        return Err(format!("{name} is not an option of wasm86 trace"));
    }
    for (what, path) in [
        ("--hda", &boot.hda),
        ("--hdb", &boot.hdb),
        ("--cdrom", &boot.cdrom),
    ] {
        if let Some(url) = path.as_deref().and_then(crate::disk::url_of) {
            return Err(format!(
                "{what} {url}: a trace needs image files (the timing of a download could \
                 change the run)"
            ));
        }
    }
    if let Some(t) = boot.timeout {
        if !(t.is_finite() && t >= 0.0) {
            return Err(format!("--timeout {t}: not a number of seconds"));
        }
    }
    Ok(())
}

fn trace(args: &TraceArgs) -> Result<(), Failure> {
    let started = Instant::now();
    check_options(&args.boot)?;
    let deadline = Deadline(
        args.boot
            .timeout
            .map(|t| started + Duration::from_secs_f64(t.min(1e9))),
    );
    let mut machine = match &args.boot.until {
        Some(text) => run_until_text(&args.boot, text, &deadline)?,
        None => {
            let (mut m, _, _) = build_machine(&args.boot)?;
            run_to(&mut m, args.from.unwrap_or(0), &deadline)?;
            m
        }
    };
    if args.boot.counters {
        machine.reset_counters();
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = print_trace(&mut machine, args, &deadline, &mut out);
    let _ = out.flush();
    if args.boot.counters {
        eprint!("{}", machine.counters().to_text());
    }
    result
}

fn reset_name(cause: ResetCause) -> &'static str {
    match cause {
        ResetCause::TripleFault => "reset (a triple fault)",
        ResetCause::Guest => "reset (it asked for a reboot)",
    }
}

/// Run the default command's slices up to instruction `n` exactly.
fn run_to(m: &mut Machine, n: u64, deadline: &Deadline) -> Result<(), Failure> {
    while m.cpu.instructions < n {
        deadline.check()?;
        let stop = m.run((n - m.cpu.instructions).min(SLICE));
        // The console takes the output after every slice too.
        let _ = m.serial_output(0);
        let at = m.cpu.instructions;
        match stop {
            Stop::Budget => {}
            Stop::Idle { .. } => {
                return Err(Failure::Error(format!(
                    "the CPU halted with nothing to wake it at instruction {at}, before \
                     instruction {n}"
                )))
            }
            Stop::Reset(cause) => {
                return Err(Failure::Reset(format!(
                    "the guest {} at instruction {at}, before instruction {n}",
                    reset_name(cause)
                )))
            }
        }
    }
    Ok(())
}

/// The machine right after the instruction that completed `text` on the serial console (see
/// the module's notes).
fn run_until_text(boot: &BootArgs, text: &str, deadline: &Deadline) -> Result<Machine, Failure> {
    // Whole slices, counting those before the one in which the text completed.
    let (mut m, _, _) = build_machine(boot)?;
    let mut watch = Watch::new(text);
    let mut slices = 0u64;
    loop {
        deadline.check()?;
        let stop = m.run(SLICE);
        if watch.push(&m.serial_output(0)) {
            break;
        }
        let at = m.cpu.instructions;
        match stop {
            Stop::Budget => {}
            Stop::Idle { .. } => {
                return Err(Failure::Error(format!(
                    "the CPU halted with nothing to wake it at instruction {at}, before {text:?} \
                     appeared"
                )))
            }
            Stop::Reset(cause) => {
                return Err(Failure::Reset(format!(
                    "the guest {} at instruction {at}, before {text:?} appeared",
                    reset_name(cause)
                )))
            }
        }
        slices += 1;
    }
    // The same run again up to that slice, then through it event by event.
    let (mut m, _, _) = build_machine(boot)?;
    let mut watch = Watch::new(text);
    for _ in 0..slices {
        deadline.check()?;
        m.run(SLICE);
        watch.push(&m.serial_output(0));
    }
    let mut events = 0u64;
    loop {
        events += 1;
        if events.is_multiple_of(CLOCK_EVERY) {
            deadline.check()?;
        }
        match m.step_event() {
            Ok(_) | Err(Stop::Budget) => {}
            Err(stop) => {
                return Err(Failure::Error(format!(
                    "the second run to {text:?} stopped ({stop:?}) at instruction {} where the \
                     first went on: the run is not deterministic",
                    m.cpu.instructions
                )))
            }
        }
        if watch.push(&m.serial_output(0)) {
            return Ok(m);
        }
    }
}

/// One trace line: the instructions retired before it, CS:EIP, the linear address, the bytes
/// and the disassembly.
fn instruction_line(retired: u64, cs: u16, code32: bool, line: &Line) -> String {
    let eip = if code32 || line.ip > 0xFFFF {
        format!("{:08x}", line.ip)
    } else {
        format!("{:04x}", line.ip)
    };
    let bytes: Vec<String> = line.bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{retired:>10}  {cs:04x}:{eip}  {:08x}  {:<20}  {}",
        line.linear,
        bytes.join(" "),
        line.text
    )
}

/// An event between instructions, in the trace's columns.
fn event_line(retired: u64, what: &str) -> String {
    format!("{retired:>10}  -- {what} --")
}

fn write_line(out: &mut impl Write, line: &str) -> Result<(), Failure> {
    writeln!(out, "{line}").map_err(|e| Failure::Error(format!("writing the trace: {e}")))
}

/// Trace `args.count` instructions from where the machine is.
fn print_trace(
    m: &mut Machine,
    args: &TraceArgs,
    deadline: &Deadline,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut traced = 0u64;
    let mut events = 0u64;
    let mut idle_waits = 0u32;
    while traced < args.count {
        events += 1;
        if events.is_multiple_of(CLOCK_EVERY) {
            deadline.check()?;
        }
        let before = args.registers.then(|| m.registers());
        let retired = m.cpu.instructions;
        let cs = m.cpu.segs[wasm86::cpu::Segment::CS as usize];
        let Some(line) = m.disassemble_around(0, 0).into_iter().next() else {
            return Err(Failure::Error("nothing to disassemble at CS:EIP".into()));
        };
        let text = instruction_line(retired, cs.selector, cs.big, &line);
        let event = m.step_event();
        if event != Err(Stop::Budget) {
            idle_waits = 0;
        }
        match event {
            Ok(Event::Retired) => {
                write_line(out, &text)?;
                traced += 1;
                if let Some(before) = before {
                    let changed = changes(&before, &Registers::of(&m.cpu));
                    if !changed.is_empty() {
                        write_line(out, &format!("{:>12}{}", "", changed.join(" ")))?;
                    }
                }
            }
            Ok(Event::Exception) => {
                write_line(out, &text)?;
                traced += 1;
                write_line(out, &event_line(retired, "exception"))?;
            }
            Ok(Event::Interrupt(vector)) => {
                write_line(
                    out,
                    &event_line(retired, &format!("interrupt {vector:#04x}")),
                )?;
            }
            // Idle time passing with the CPU halted: wait on, a while.
            Err(Stop::Budget) => {
                idle_waits += 1;
                if idle_waits >= MAX_IDLE_WAITS {
                    eprintln!(
                        "wasm86 trace: the CPU halted at instruction {} and no interrupt woke \
                         it for a minute of virtual time",
                        m.cpu.instructions
                    );
                    break;
                }
            }
            Err(Stop::Idle { .. }) => {
                eprintln!(
                    "wasm86 trace: the CPU halted with nothing to wake it at instruction {}",
                    m.cpu.instructions
                );
                break;
            }
            Err(Stop::Reset(cause)) => {
                eprintln!(
                    "wasm86 trace: the guest {} at instruction {}",
                    reset_name(cause),
                    m.cpu.instructions
                );
                break;
            }
        }
    }
    Ok(())
}
