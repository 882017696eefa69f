//! The debug console of Bochs and QEMU: a byte the guest writes to port 0xE9 (Bochs's "port E9
//! hack", QEMU's `-debugcon`) or 0x402 (QEMU's `isa-debugcon` as SeaBIOS builds for QEMU use it)
//! goes to the host, unbuffered and without a UART to program, which makes it where firmware
//! and early boot code print their logs. A read of either port returns 0xE9, which is how a
//! guest tells that the console is there.
//!
//! What was written waits for the host to take it ([`DebugConsole::take_output`]); it is output
//! on its way out, not device state, so a saved state leaves it out and the console has no
//! state at all.

use super::{At, DevCtx, Device};

/// Bochs's port.
pub const PORT_E9: u16 = 0xE9;
/// QEMU's `isa-debugcon` port in SeaBIOS's QEMU builds.
pub const PORT_402: u16 = 0x402;
/// What a read returns.
const READBACK: u32 = 0xE9;
/// The most output kept for a host that does not take it; older bytes go first.
const MAX_PENDING: usize = 1 << 20;

/// The console: what the guest wrote and the host has not taken yet.
#[derive(Clone, Debug, Default)]
pub struct DebugConsole {
    output: Vec<u8>,
}

impl DebugConsole {
    /// Take what the guest wrote since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }
}

impl Device for DebugConsole {
    fn read(&mut self, _at: At, _size: u8, _ctx: &mut DevCtx) -> u32 {
        READBACK
    }

    fn write(&mut self, _at: At, _size: u8, value: u32, _ctx: &mut DevCtx) {
        // A wider OUT writes its low byte, as on QEMU.
        if self.output.len() >= MAX_PENDING {
            self.output.drain(..MAX_PENDING / 2);
        }
        self.output.push(value as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::testing::Rig;

    #[test]
    fn bytes_written_to_either_port_reach_the_host_and_reads_say_e9() {
        let mut r = Rig::new(DebugConsole::default(), PORT_E9.into());
        for &b in b"Seab" {
            r.write_at(PORT_E9.into(), 0, 1, b.into());
        }
        r.write_at(PORT_402.into(), 0, 2, 0x4169); // "i", the high byte dropped
        assert_eq!(r.dev.take_output(), b"Seabi");
        assert!(r.dev.take_output().is_empty());
        assert_eq!(r.read_at(PORT_E9.into(), 0, 1), 0xE9);
        assert_eq!(r.read_at(PORT_402.into(), 0, 1), 0xE9);
    }

    #[test]
    fn a_host_that_never_takes_the_output_keeps_only_the_newest() {
        let mut r = Rig::new(DebugConsole::default(), PORT_E9.into());
        for i in 0..MAX_PENDING + 10 {
            r.outb(0, i as u8);
        }
        let out = r.dev.take_output();
        assert!(out.len() <= MAX_PENDING);
        assert_eq!(out.last(), Some(&((MAX_PENDING + 9) as u8)));
    }
}
