//! The inspector's part of the page's `Machine`: registers, disassembly, memory, the page-table
//! walk, stepping and breakpoints (see `crate::inspect` and `crate::machine::inspect`). Answers
//! are JSON strings (the worker parses them and posts plain objects to the page); addresses are
//! linear.

use super::machine::Machine;
use crate::machine::inspect::{Breakpoint, Pause};
use crate::machine::Stop;
use serde::Serialize;
use wasm_bindgen::prelude::*;

/// Most instructions one `step_over` may run before it gives up (the call never returned).
const STEP_OVER_LIMIT: u64 = 50_000_000;

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// A breakpoint as the page sees it: `{kind: "linear"|"port", at}`.
#[derive(Serialize)]
struct PageBreakpoint {
    kind: &'static str,
    at: u32,
}

impl From<Breakpoint> for PageBreakpoint {
    fn from(b: Breakpoint) -> Self {
        match b {
            Breakpoint::Linear(at) => PageBreakpoint { kind: "linear", at },
            Breakpoint::Port(p) => PageBreakpoint {
                kind: "port",
                at: u32::from(p),
            },
        }
    }
}

/// A breakpoint as the page names it: a linear address, or `port` with an I/O port.
fn breakpoint(kind: &str, at: u32) -> Result<Breakpoint, JsError> {
    match kind {
        "linear" => Ok(Breakpoint::Linear(at)),
        "port" if at <= 0xFFFF => Ok(Breakpoint::Port(at as u16)),
        "port" => Err(JsError::new(&format!(
            "port {at:#x}: ports go up to 0xffff"
        ))),
        _ => Err(JsError::new(&format!(
            "breakpoint kind {kind:?}: use \"linear\" or \"port\""
        ))),
    }
}

fn stop_name(stop: Stop) -> &'static str {
    match stop {
        Stop::Budget => "budget",
        Stop::Idle { .. } => "idle",
        Stop::Reset(_) => "reset",
    }
}

#[wasm_bindgen]
impl Machine {
    /// The CPU's registers, segment caches, control registers, CPL and mode, as JSON.
    pub fn registers(&self) -> String {
        json(&self.core.registers())
    }

    /// `count` instructions from linear address `linear`, or around EIP when `linear` is
    /// undefined, as JSON: `[{linear, ip, bytes, text}]`.
    pub fn disassemble(&self, linear: Option<u32>, count: u32) -> String {
        let count = count.clamp(1, 256) as usize;
        match linear {
            Some(at) => json(&self.core.disassemble(at, count)),
            None => json(&self.core.disassemble_around(count / 3, count - count / 3)),
        }
    }

    /// The page-table walk of linear address `linear`, step by step, as JSON.
    pub fn translate(&self, linear: u32) -> String {
        json(&self.core.translate(linear))
    }

    /// `length` bytes (at most 4096) from linear address `linear`, as JSON: a number per byte,
    /// `null` where the byte cannot be read (not present, device memory).
    pub fn read_memory(&self, linear: u32, length: u32) -> String {
        json(&self.core.read_linear(linear, length.min(4096) as usize))
    }

    /// Retire `n` instructions (an interrupt delivered on the way retires none) and say why it
    /// stopped: "budget" (done), "idle" (halted with nothing to wake it) or "reset".
    pub fn step(&mut self, n: u32) -> String {
        let stop = self.core.step(u64::from(n));
        self.after_inspector_run(stop)
    }

    /// Step over the instruction at EIP (a CALL, INT, REP string instruction or LOOP runs
    /// until the next one; anything else is one step): "budget", "breakpoint" (one was hit on
    /// the way), "idle" or "reset".
    pub fn step_over(&mut self) -> String {
        match self.core.step_over(&self.breakpoints, STEP_OVER_LIMIT) {
            Pause::Stepped => self.after_inspector_run(Stop::Budget),
            Pause::Breakpoint(_) => {
                self.skip_breakpoint_once = true;
                "breakpoint".into()
            }
            Pause::Stop(stop) => self.after_inspector_run(stop),
        }
    }

    /// Add a breakpoint: `kind` "linear" (stop before the instruction at that linear address)
    /// or "port" (stop before an instruction that reads or writes that I/O port). While any is
    /// set, `run` goes instruction by instruction. Returns false if it was already set.
    pub fn add_breakpoint(&mut self, kind: &str, at: u32) -> Result<bool, JsError> {
        Ok(self.breakpoints.add(breakpoint(kind, at)?))
    }

    /// Remove a breakpoint; false if there was none.
    pub fn remove_breakpoint(&mut self, kind: &str, at: u32) -> Result<bool, JsError> {
        Ok(self.breakpoints.remove(breakpoint(kind, at)?))
    }

    /// Remove every breakpoint.
    pub fn clear_breakpoints(&mut self) {
        self.breakpoints.clear();
    }

    /// The breakpoints, as JSON: `[{kind: "linear"|"port", at}]`.
    pub fn breakpoints(&self) -> String {
        let list: Vec<PageBreakpoint> = self.breakpoints.list().iter().map(|&b| b.into()).collect();
        json(&list)
    }

    /// The breakpoint `run` stopped at, as JSON (`{kind, at}`), or "null".
    pub fn breakpoint_hit(&self) -> String {
        json(
            &self
                .core
                .breakpoint_at_eip(&self.breakpoints)
                .map(PageBreakpoint::from),
        )
    }
}

impl Machine {
    /// A stop of an inspector run, as `run` reports it (a reset boots the kernel again). The
    /// next run goes on from where the step left the CPU, even at a breakpoint.
    fn after_inspector_run(&mut self, stop: Stop) -> String {
        self.skip_breakpoint_once = true;
        if let Stop::Reset(_) = stop {
            self.reboot();
        }
        stop_name(stop).into()
    }

    /// `run` while breakpoints are set: event by event, checking each instruction before it
    /// runs, up to `budget` instructions. Virtual time still follows the host's: while the CPU
    /// is halted, time moves to the host clock and no further (an idle guest is not
    /// fast-forwarded). Returns "breakpoint" when one is hit (the next run steps off it),
    /// else as `run`.
    pub(super) fn run_to_breakpoints(&mut self, host_ns: u64, budget: u64) -> &'static str {
        let end = self.core.cpu.instructions.saturating_add(budget);
        while self.core.cpu.instructions < end {
            if !std::mem::take(&mut self.skip_breakpoint_once)
                && self.core.breakpoint_at_eip(&self.breakpoints).is_some()
            {
                self.skip_breakpoint_once = true;
                return "breakpoint";
            }
            if self.core.cpu.halted {
                // Devices and time up to the host clock, without running an instruction.
                if let Stop::Reset(_) = self.core.run_realtime(host_ns, 0) {
                    self.reboot();
                    return "reset";
                }
                let cpu = &self.core.cpu;
                if !(cpu.flags.sys(crate::cpu::flags::IF) && cpu.bus.interrupt_pending()) {
                    return "idle";
                }
            }
            if let Err(stop) = self.core.step_event() {
                if let Stop::Reset(_) = stop {
                    self.reboot();
                }
                return stop_name(stop);
            }
        }
        "budget"
    }
}
