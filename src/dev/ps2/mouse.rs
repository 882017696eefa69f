//! The PS/2 mouse behind the i8042 (IntelliMouse / IntelliMouse Explorer): packets, its
//! commands and modes.

use super::*;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

// Mouse packet byte 0 bits.
/// Left button.
pub const MB_LEFT: u8 = 0x01;
/// Right button.
pub const MB_RIGHT: u8 = 0x02;
/// Middle button.
pub const MB_MIDDLE: u8 = 0x04;
/// Always set in byte 0.
pub const MP_ALWAYS1: u8 = 0x08;
/// X movement is negative.
pub const MP_X_SIGN: u8 = 0x10;
/// Y movement is negative.
pub const MP_Y_SIGN: u8 = 0x20;
/// X movement overflowed.
pub const MP_X_OVERFLOW: u8 = 0x40;
/// Y movement overflowed.
pub const MP_Y_OVERFLOW: u8 = 0x80;

/// A PS/2 mouse with IntelliMouse (ID 3, wheel) and IntelliMouse Explorer (ID 4, wheel and
/// buttons 4/5) extensions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mouse {
    /// Replies to host commands (sent before packets).
    pub(super) replies: VecDeque<u8>,
    /// Motion packets waiting to be sent.
    pub(super) packets: VecDeque<u8>,
    /// Data reporting enabled (stream mode).
    pub(super) reporting: bool,
    /// Remote mode: packets only on 0xEB.
    pub(super) remote: bool,
    /// Wrap (echo) mode.
    pub(super) wrap: bool,
    /// 2:1 scaling.
    pub(super) scaling21: bool,
    /// Resolution (0-3: 1, 2, 4, 8 counts/mm).
    pub(super) resolution: u8,
    /// Samples per second.
    pub(super) sample_rate: u8,
    /// Device ID (0 standard, 3 IntelliMouse, 4 Explorer).
    pub(super) id: u8,
    /// The last three sample rates set, for the extension magic.
    pub(super) rate_history: [u8; 3],
    /// A command that waits for its parameter byte.
    pub(super) pending: Option<u8>,
    /// Accumulated motion not yet reported (PS/2 directions: y up, z down positive).
    pub(super) dx: i32,
    pub(super) dy: i32,
    pub(super) dz: i32,
    /// Buttons held (bit 0 left, 1 right, 2 middle, 3 fourth, 4 fifth).
    pub(super) buttons: u8,
    /// The buttons reported last.
    pub(super) reported_buttons: u8,
    /// The last byte sent, for 0xFE resend.
    pub(super) last_sent: u8,
}

impl Default for Mouse {
    fn default() -> Self {
        Mouse {
            replies: VecDeque::new(),
            packets: VecDeque::new(),
            reporting: false,
            remote: false,
            wrap: false,
            scaling21: false,
            resolution: 2,
            sample_rate: 100,
            id: 0,
            rate_history: [0; 3],
            pending: None,
            dx: 0,
            dy: 0,
            dz: 0,
            buttons: 0,
            reported_buttons: 0,
            last_sent: 0,
        }
    }
}

impl Mouse {
    pub(super) fn set_defaults(&mut self) {
        self.reporting = false;
        self.remote = false;
        self.scaling21 = false;
        self.resolution = 2;
        self.sample_rate = 100;
        self.packets.clear();
        self.dx = 0;
        self.dy = 0;
        self.dz = 0;
    }

    pub(super) fn reply(&mut self, b: u8) {
        if self.replies.len() < REPLY_QUEUE {
            self.replies.push_back(b);
        }
    }

    /// 2:1 scaling (stream mode only).
    pub(super) fn scale(&self, d: i32) -> i32 {
        if !self.scaling21 {
            return d;
        }
        let m = match d.abs() {
            0 => 0,
            1 => 1,
            2 => 1,
            3 => 3,
            4 => 6,
            5 => 9,
            n => n.saturating_mul(2),
        };
        m * d.signum()
    }

    /// Build one packet from the accumulated motion and queue it.
    pub(super) fn emit_packet(&mut self, stream: bool) {
        let (mut dx, mut dy) = (self.dx, self.dy);
        if stream {
            dx = self.scale(dx);
            dy = self.scale(dy);
        }
        let mut b0 = MP_ALWAYS1 | (self.buttons & 7);
        if dx < 0 {
            b0 |= MP_X_SIGN;
        }
        if dy < 0 {
            b0 |= MP_Y_SIGN;
        }
        if !(-256..=255).contains(&dx) {
            b0 |= MP_X_OVERFLOW;
            dx = dx.clamp(-256, 255);
        }
        if !(-256..=255).contains(&dy) {
            b0 |= MP_Y_OVERFLOW;
            dy = dy.clamp(-256, 255);
        }
        self.packets.push_back(b0);
        self.packets.push_back(dx as u8);
        self.packets.push_back(dy as u8);
        match self.id {
            3 => {
                let z = self.dz.clamp(-128, 127);
                self.packets.push_back(z as u8);
            }
            4 => {
                let z = self.dz.clamp(-8, 7) as u8 & 0x0F;
                self.packets.push_back(z | ((self.buttons & 0x18) << 1));
            }
            _ => {}
        }
        self.reported_buttons = self.buttons;
        self.dx = 0;
        self.dy = 0;
        self.dz = 0;
    }

    pub(super) fn has_motion(&self) -> bool {
        self.dx != 0 || self.dy != 0 || self.dz != 0 || self.buttons != self.reported_buttons
    }

    /// In stream mode with reporting on, turn accumulated motion into a packet once the
    /// previous one has gone (motion coalesces while the guest is slow).
    pub(super) fn refill(&mut self) {
        let streaming = self.reporting && !self.remote && !self.wrap;
        if streaming && self.packets.is_empty() && self.has_motion() {
            self.emit_packet(true);
        }
    }

    pub(super) fn motion(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.dx = self.dx.saturating_add(dx).clamp(-4096, 4096);
        self.dy = self.dy.saturating_add(dy).clamp(-4096, 4096);
        self.dz = self.dz.saturating_add(dz).clamp(-4096, 4096);
        self.buttons = buttons & 0x1F;
        self.refill();
    }

    pub(super) fn is_command(b: u8) -> bool {
        matches!(b, 0xE6..=0xEE | 0xF0 | 0xF2..=0xF6 | 0xFE | 0xFF)
    }

    /// The host sends a byte to the mouse.
    pub(super) fn write(&mut self, b: u8) {
        if self.wrap && b != 0xEC && b != 0xFF {
            // Wrap mode echoes every byte except "reset wrap mode" and "reset".
            self.reply(b);
            return;
        }
        if let Some(cmd) = self.pending.take() {
            match cmd {
                // Guest sets the sample rate.
                0xF3 if matches!(b, 10 | 20 | 40 | 60 | 80 | 100 | 200) => {
                    self.sample_rate = b;
                    self.rate_history = [self.rate_history[1], self.rate_history[2], b];
                    match self.rate_history {
                        [200, 100, 80] if self.id == 0 => self.id = 3,
                        [200, 200, 80] if self.id == 3 => self.id = 4,
                        _ => {}
                    }
                    self.reply(ACK);
                    return;
                }
                // Guest sets the resolution.
                0xE8 if b <= 3 => {
                    self.resolution = b;
                    self.reply(ACK);
                    return;
                }
                _ if !Self::is_command(b) => {
                    self.reply(RESEND);
                    return;
                }
                _ => {}
            }
        }
        // A command stops the packet flow; pending packets are dropped.
        self.packets.clear();
        match b {
            // Guest selects 1:1 scaling.
            0xE6 => {
                self.scaling21 = false;
                self.reply(ACK);
            }
            // Guest selects 2:1 scaling.
            0xE7 => {
                self.scaling21 = true;
                self.reply(ACK);
            }
            // Guest sets the resolution (parameter follows).
            0xE8 => {
                self.reply(ACK);
                self.pending = Some(b);
            }
            // Guest asks for status: mode/buttons, resolution, sample rate.
            0xE9 => {
                self.reply(ACK);
                let mut s = 0;
                if self.remote {
                    s |= 0x40;
                }
                if self.reporting {
                    s |= 0x20;
                }
                if self.scaling21 {
                    s |= 0x10;
                }
                if self.buttons & MB_LEFT != 0 {
                    s |= 0x04;
                }
                if self.buttons & MB_MIDDLE != 0 {
                    s |= 0x02;
                }
                if self.buttons & MB_RIGHT != 0 {
                    s |= 0x01;
                }
                self.reply(s);
                self.reply(self.resolution);
                self.reply(self.sample_rate);
            }
            // Guest selects stream mode.
            0xEA => {
                self.remote = false;
                self.reply(ACK);
            }
            // Guest reads a packet (remote mode).
            0xEB => {
                self.reply(ACK);
                self.emit_packet(false);
                let p: Vec<u8> = self.packets.drain(..).collect();
                for b in p {
                    self.reply(b);
                }
            }
            // Guest leaves wrap mode.
            0xEC => {
                self.wrap = false;
                self.reply(ACK);
            }
            // Guest enters wrap mode.
            0xEE => {
                self.wrap = true;
                self.reply(ACK);
            }
            // Guest selects remote mode.
            0xF0 => {
                self.remote = true;
                self.reply(ACK);
            }
            // Guest asks for the device ID.
            0xF2 => {
                self.reply(ACK);
                self.reply(self.id);
            }
            // Guest sets the sample rate (parameter follows).
            0xF3 => {
                self.reply(ACK);
                self.pending = Some(b);
            }
            // Guest enables data reporting.
            0xF4 => {
                self.reporting = true;
                self.dx = 0;
                self.dy = 0;
                self.dz = 0;
                self.reported_buttons = self.buttons;
                self.reply(ACK);
            }
            // Guest disables data reporting.
            0xF5 => {
                self.reporting = false;
                self.reply(ACK);
            }
            // Guest restores defaults.
            0xF6 => {
                self.set_defaults();
                self.reply(ACK);
            }
            // Guest asks for the last byte again.
            0xFE => {
                let last = self.last_sent;
                self.reply(last);
            }
            // Guest resets the mouse: ACK, self-test passed, ID.
            0xFF => {
                self.set_defaults();
                self.replies.clear();
                self.wrap = false;
                self.id = 0;
                self.rate_history = [0; 3];
                self.reply(ACK);
                self.reply(BAT_OK);
                self.reply(0x00);
            }
            // Anything else is not a mouse command.
            _ => self.reply(RESEND),
        }
    }

    pub(super) fn next_byte(&mut self) -> Option<u8> {
        if self.replies.is_empty() && self.packets.is_empty() {
            self.refill();
        }
        let b = self
            .replies
            .pop_front()
            .or_else(|| self.packets.pop_front())?;
        self.last_sent = b;
        Some(b)
    }

    pub(super) fn has_data(&self) -> bool {
        !self.replies.is_empty()
            || !self.packets.is_empty()
            || (self.reporting && !self.remote && !self.wrap && self.has_motion())
    }
}
