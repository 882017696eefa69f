//! Control transfer: jumps, calls, returns, loops, INT/IRET, HLT, flag control, port I/O.
//! (being written: only HLT so far)

use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::{Exception, Fault};
use super::Cpu;

/// Decode the opcodes of this group.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    Ok(match op {
        0xF4 => {
            d.end_block();
            hlt
        }
        _ => undefined(),
    })
}

/// HLT: privileged; stops until an interrupt.
fn hlt(cpu: &mut Cpu, _: &Instr) -> Fault {
    if cpu.protected_mode() && cpu.cpl != 0 {
        return Err(Exception::gp(0));
    }
    cpu.halted = true;
    cpu.stop_block = true;
    Ok(())
}
