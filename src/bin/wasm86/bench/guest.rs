//! One run of the benchmark guest in wasm86: boot, type `/bench/run` at the prompt, and note
//! the instruction count and wall time at each marker line on the serial console.

use super::Span;
use crate::console::{self, Watch};
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use wasm86::machine::{Machine, Stop};

/// Instructions per run slice: a marker's instruction count and time are those at the end of
/// the slice it appeared in, so slices are short (about a millisecond).
const SLICE: u64 = 100_000;
/// Virtual time the guest may spend without a new marker (or the prompt) before it counts as
/// stuck: the slowest workload takes a few seconds of virtual time.
const MAX_SILENT_NS: u64 = 300_000_000_000;
/// The marker prefix /bench/run prints.
pub const MARKER: &str = "WASM86-BENCH ";

pub struct Options<'a> {
    pub kernel: &'a (PathBuf, Vec<u8>),
    pub initrd: &'a (PathBuf, Vec<u8>),
    pub append: &'a str,
    pub memory_mib: u32,
    pub script_args: &'a [String],
    pub verbose: bool,
}

/// What one run measured.
pub struct GuestRun {
    /// Wall seconds and instructions from power-on to the shell prompt.
    pub boot_wall: f64,
    pub boot_instructions: u64,
    /// Wall seconds from power-on to `WASM86-BENCH done`.
    pub total_wall: f64,
    /// The workloads, in the order they ran.
    pub spans: Vec<Span>,
}

/// Boot and run /bench/run once.
pub fn run_once(opts: &Options) -> Result<GuestRun, String> {
    let mut machine = Machine::new(console::machine_config(opts.memory_mib, false));
    console::boot(
        &mut machine,
        opts.kernel,
        &Some(opts.initrd.clone()),
        opts.append,
    )?;
    let start = Instant::now();
    let mut out: Vec<u8> = Vec::new();
    // How far `out` was searched for terminal queries and split into lines.
    let mut queries_scanned = 0;
    let mut line_start = 0;
    let mut prompt = Some(Watch::new("/ # "));
    let mut typed: VecDeque<u8> = VecDeque::new();
    let mut boot = None;
    let mut open: Option<(String, u64, Instant)> = None;
    let mut spans = Vec::new();
    let mut last_event = machine.now();
    let mut stderr = std::io::stderr();

    loop {
        let stop = machine.run(SLICE);
        let bytes = machine.serial_output(0);
        let at = Instant::now();
        if !bytes.is_empty() {
            if opts.verbose {
                let _ = stderr.write_all(&bytes);
            }
            out.extend_from_slice(&bytes);
            // busybox's line editor asks where the cursor is at each prompt; answer as a
            // terminal would ("row 1, column 1"), or it may swallow the typed line.
            while let Some(pos) = find(&out[queries_scanned..], b"\x1b[6n") {
                queries_scanned += pos + 4;
                typed.extend(b"\x1b[1;1R");
            }
            if prompt.as_mut().is_some_and(|w| w.push(&bytes)) {
                prompt = None;
                boot = Some((at, machine.cpu.instructions));
                last_event = machine.now();
                let mut line = String::from("/bench/run");
                for a in opts.script_args {
                    line.push(' ');
                    line.push_str(a);
                }
                line.push('\n');
                typed.extend(line.bytes());
            }
            // Complete lines: look for markers.
            while let Some(nl) = out[line_start..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&out[line_start..line_start + nl]).into_owned();
                line_start += nl + 1;
                let Some(pos) = line.find(MARKER) else {
                    continue;
                };
                let marker = line[pos + MARKER.len()..].trim_end().to_string();
                last_event = machine.now();
                let instr = machine.cpu.instructions;
                let mut words = marker.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("begin"), Some(name)) => open = Some((name.to_string(), instr, at)),
                    (Some("end"), Some(name)) => match open.take() {
                        Some((begun, i0, t0)) if begun == name => spans.push(Span {
                            name: name.to_string(),
                            instructions: instr - i0,
                            wall: at.duration_since(t0).as_secs_f64(),
                        }),
                        _ => return Err(format!("guest: {line:?} without its begin marker")),
                    },
                    (Some("done"), None) => {
                        let (boot_at, boot_instructions) =
                            boot.ok_or("guest: done before the prompt")?;
                        return Ok(GuestRun {
                            boot_wall: boot_at.duration_since(start).as_secs_f64(),
                            boot_instructions,
                            total_wall: at.duration_since(start).as_secs_f64(),
                            spans,
                        });
                    }
                    (Some("error"), _) => {
                        return Err(format!("the guest reported a wrong result: {marker}"))
                    }
                    _ => return Err(format!("guest: unknown marker line {line:?}")),
                }
            }
        }
        while let Some(&b) = typed.front() {
            if !machine.serial_input(0, b) {
                break;
            }
            typed.pop_front();
        }
        let what = if prompt.is_some() {
            "the shell prompt".to_string()
        } else {
            format!(
                "the next marker (after {} workloads)",
                spans.len() + usize::from(open.is_some())
            )
        };
        match stop {
            Stop::Reset(cause) => {
                return Err(format!(
                    "the guest reset ({cause:?}) waiting for {what}{}",
                    tail(&out)
                ))
            }
            Stop::Idle {
                next_deadline: None,
            } => {
                return Err(format!(
                    "the guest halted for good waiting for {what}{}",
                    tail(&out)
                ))
            }
            _ => {}
        }
        if machine.now().saturating_sub(last_event) > MAX_SILENT_NS {
            return Err(format!(
                "the guest made no progress: no {what} in {} s of virtual time{}",
                MAX_SILENT_NS / 1_000_000_000,
                tail(&out)
            ));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The end of the serial output, for error messages.
fn tail(out: &[u8]) -> String {
    let from = out.len().saturating_sub(1500);
    format!(
        "; the serial console ended with:\n{}",
        String::from_utf8_lossy(&out[from..])
    )
}
