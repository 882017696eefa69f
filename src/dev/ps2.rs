//! The i8042 keyboard controller with a PS/2 keyboard (MF2) and a PS/2 mouse (IntelliMouse /
//! IntelliMouse Explorer), at ports 0x60 (data, offset 0) and 0x64 (status/command, offset 4).
//! # Wiring for the board
//!
//! Port 0x61 between the two belongs to the PIT (system control port B), so the board maps
//! 0x60 and 0x64 as two one-port ranges to the one [`I8042`], which finds the port from the
//! address of the access ([`BASE`] plus [`PORT_DATA`] or [`PORT_CMD`]), and registers it as
//! [`Timed`]. After each access or advance, hand `irq.levels()` to the PIC and re-read
//! `next_deadline()`; apply `BoardSignals::a20` and `reset`.
//!
//! The keyboard speaks scan code set 2 internally; the controller translates to set 1 when the
//! command byte's XLAT bit is set, with the standard 8042 translation table.
//!
//! One byte at a time flows through the controller's output buffer. IRQ 1 (keyboard) or IRQ 12
//! (mouse) is held high while the buffer is full and its interrupt is enabled. After the guest
//! reads a byte the next one is loaded [`REFILL_DELAY`] later in virtual time (a PS/2 byte takes
//! about a millisecond on the wire), so the line visibly drops between bytes and an
//! edge-triggered PIC sees one edge per byte.

use super::{At, DevCtx, Device, Nanos, Timed};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The data port, 0x60: the controller's ports are at offsets from it.
pub const BASE: u32 = 0x60;
// Port offsets (from 0x60).
/// Data port 0x60.
pub const PORT_DATA: u16 = 0;
/// Status (read) / command (write) port 0x64.
pub const PORT_CMD: u16 = 4;

// Status register bits.
/// Output buffer full: a byte is waiting at port 0x60.
pub const STS_OBF: u8 = 0x01;
/// Input buffer full: the controller has not yet taken the last write (always 0 here).
pub const STS_IBF: u8 = 0x02;
/// System flag: set after a successful self test / by command byte bit 2.
pub const STS_SYS: u8 = 0x04;
/// Last write was to the command port (0x64) rather than the data port.
pub const STS_A2: u8 = 0x08;
/// Keyboard not inhibited (the key-lock switch is open).
pub const STS_INH: u8 = 0x10;
/// The output buffer holds a byte from the mouse.
pub const STS_AUXB: u8 = 0x20;
/// General timeout.
pub const STS_TIMEOUT: u8 = 0x40;
/// Parity error.
pub const STS_PARITY: u8 = 0x80;

// Command byte (controller RAM byte 0) bits.
/// Raise IRQ 1 when a keyboard byte is in the output buffer.
pub const CB_KBD_INT: u8 = 0x01;
/// Raise IRQ 12 when a mouse byte is in the output buffer.
pub const CB_AUX_INT: u8 = 0x02;
/// System flag (copied to the status register).
pub const CB_SYS: u8 = 0x04;
/// Keyboard interface disabled (clock held low).
pub const CB_KBD_DISABLE: u8 = 0x10;
/// Mouse interface disabled.
pub const CB_AUX_DISABLE: u8 = 0x20;
/// Translate keyboard bytes from set 2 to set 1.
pub const CB_XLAT: u8 = 0x40;

// Output port bits.
/// System reset line (0 = reset the CPU).
pub const OP_RESET: u8 = 0x01;
/// A20 gate.
pub const OP_A20: u8 = 0x02;
/// Keyboard output buffer full (IRQ 1).
pub const OP_KBD_OBF: u8 = 0x10;
/// Mouse output buffer full (IRQ 12).
pub const OP_AUX_OBF: u8 = 0x20;

// Controller commands (written to port 0x64).
/// Read controller RAM byte 0 (the command byte); 0x21-0x3F read further RAM bytes.
pub const CMD_READ_CB: u8 = 0x20;
/// Write the command byte (next data byte); 0x61-0x7F write further RAM bytes.
pub const CMD_WRITE_CB: u8 = 0x60;
/// Password installed test (0xF1: none).
pub const CMD_PASSWORD_TEST: u8 = 0xA4;
/// Disable the mouse interface.
pub const CMD_AUX_DISABLE: u8 = 0xA7;
/// Enable the mouse interface.
pub const CMD_AUX_ENABLE: u8 = 0xA8;
/// Test the mouse interface (0x00: ok).
pub const CMD_AUX_TEST: u8 = 0xA9;
/// Controller self test (0x55: ok).
pub const CMD_SELF_TEST: u8 = 0xAA;
/// Test the keyboard interface (0x00: ok).
pub const CMD_KBD_TEST: u8 = 0xAB;
/// Disable the keyboard interface.
pub const CMD_KBD_DISABLE: u8 = 0xAD;
/// Enable the keyboard interface.
pub const CMD_KBD_ENABLE: u8 = 0xAE;
/// Read the input port.
pub const CMD_READ_INPUT: u8 = 0xC0;
/// Read the output port.
pub const CMD_READ_OUTPUT: u8 = 0xD0;
/// Write the output port (next data byte).
pub const CMD_WRITE_OUTPUT: u8 = 0xD1;
/// Write the next data byte to the output buffer as if from the keyboard.
pub const CMD_WRITE_KBD_OBUF: u8 = 0xD2;
/// Write the next data byte to the output buffer as if from the mouse.
pub const CMD_WRITE_AUX_OBUF: u8 = 0xD3;
/// Send the next data byte to the mouse.
pub const CMD_WRITE_AUX: u8 = 0xD4;
/// Disable A20 (HP Vectra command, widely supported).
pub const CMD_A20_OFF: u8 = 0xDD;
/// Enable A20.
pub const CMD_A20_ON: u8 = 0xDF;
/// Read test inputs.
pub const CMD_READ_TEST: u8 = 0xE0;

// Device replies.
/// Acknowledge.
pub const ACK: u8 = 0xFA;
/// Resend / unknown command.
pub const RESEND: u8 = 0xFE;
/// Basic assurance test passed.
pub const BAT_OK: u8 = 0xAA;

/// Delay between the guest reading the output buffer and the next byte appearing.
pub const REFILL_DELAY: Nanos = 100_000;
/// How many scan code bytes the keyboard buffers before it reports an overrun.
const DEVICE_QUEUE: usize = 16;
/// How many command replies a device or the controller holds for a guest that doesn't read.
const REPLY_QUEUE: usize = 32;

/// The standard 8042 translation from scan code set 2 to set 1 (bytes 0x80 and above pass
/// through, except 0x83 (F7) and 0x84 (Alt+SysRq)).
const XLAT: [u8; 0x85] = [
    0xff, 0x43, 0x41, 0x3f, 0x3d, 0x3b, 0x3c, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3e, 0x0f, 0x29, 0x59,
    0x65, 0x38, 0x2a, 0x70, 0x1d, 0x10, 0x02, 0x5a, 0x66, 0x71, 0x2c, 0x1f, 0x1e, 0x11, 0x03, 0x5b,
    0x67, 0x2e, 0x2d, 0x20, 0x12, 0x05, 0x04, 0x5c, 0x68, 0x39, 0x2f, 0x21, 0x14, 0x13, 0x06, 0x5d,
    0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5e, 0x6a, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5f,
    0x6b, 0x33, 0x25, 0x17, 0x18, 0x0b, 0x0a, 0x60, 0x6c, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0c, 0x61,
    0x6d, 0x73, 0x28, 0x74, 0x1a, 0x0d, 0x62, 0x6e, 0x3a, 0x36, 0x1c, 0x1b, 0x75, 0x2b, 0x63, 0x76,
    0x55, 0x56, 0x77, 0x78, 0x79, 0x7a, 0x0e, 0x7b, 0x7c, 0x4f, 0x7d, 0x4b, 0x47, 0x7e, 0x7f, 0x6f,
    0x52, 0x53, 0x50, 0x4c, 0x4d, 0x48, 0x01, 0x45, 0x57, 0x4e, 0x51, 0x4a, 0x37, 0x49, 0x46, 0x54,
    0x80, 0x81, 0x82, 0x41, 0x54,
];

/// Translate one set-2 byte to set 1 (without the break bit).
pub fn translate(b: u8) -> u8 {
    XLAT.get(b as usize).copied().unwrap_or(b)
}

/// The set-2 break sequence for a set-2 make sequence: each code (an optional E0 prefix and a
/// byte) gets F0 before its last byte, and the codes come in reverse order (Print Screen's
/// `E0 12 E0 7C` breaks as `E0 F0 7C E0 F0 12`). Pause (`E1 ...`) has no break.
pub fn set2_break(make: &[u8]) -> Vec<u8> {
    if make.first() == Some(&0xE1) {
        return Vec::new();
    }
    let mut codes: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while i < make.len() {
        let len = if make[i] == 0xE0 && i + 1 < make.len() {
            2
        } else {
            1
        };
        codes.push(&make[i..i + len]);
        i += len;
    }
    let mut out = Vec::with_capacity(make.len() * 2);
    for code in codes.iter().rev() {
        if let Some((last, prefix)) = code.split_last() {
            out.extend_from_slice(prefix);
            out.push(0xF0);
            out.push(*last);
        }
    }
    out
}

/// Translate a set-2 byte stream to set 1 (F0 prefixes become the break bit), carrying a
/// pending F0 in `f0`.
fn translate_stream(bytes: &[u8], f0: &mut bool, out: &mut Vec<u8>) {
    for &b in bytes {
        if b == 0xF0 {
            *f0 = true;
        } else {
            out.push(translate(b) | if *f0 { 0x80 } else { 0 });
            *f0 = false;
        }
    }
}

/// A PS/2 MF2 keyboard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Keyboard {
    /// Replies to host commands (sent before scan codes).
    replies: VecDeque<u8>,
    /// Scan codes waiting to be sent.
    codes: VecDeque<u8>,
    /// Scanning enabled.
    scanning: bool,
    /// Scan code set (1, 2 or 3; set 3 is reported but set-2 codes are sent).
    set: u8,
    /// LED state (bit 0 scroll, 1 num, 2 caps lock).
    pub leds: u8,
    /// Typematic rate/delay byte (0xF3 parameter).
    typematic: u8,
    /// A command that waits for its parameter byte.
    pending: Option<u8>,
    /// The last byte sent, for 0xFE resend.
    last_sent: u8,
    /// The set-2 make sequence of the key that repeats while held.
    repeat_key: Option<Vec<u8>>,
    /// When that key next repeats.
    repeat_at: Option<Nanos>,
}

/// Default typematic byte: 10.9 characters/s after 500 ms.
pub const TYPEMATIC_DEFAULT: u8 = 0x2B;

impl Default for Keyboard {
    fn default() -> Self {
        Keyboard {
            replies: VecDeque::new(),
            codes: VecDeque::new(),
            scanning: true,
            set: 2,
            leds: 0,
            typematic: TYPEMATIC_DEFAULT,
            pending: None,
            last_sent: 0,
            repeat_key: None,
            repeat_at: None,
        }
    }
}

impl Keyboard {
    /// Delay before the first repeat (bits 5-6: 250 ms × (n + 1)).
    fn delay(&self) -> Nanos {
        250_000_000 * (1 + ((self.typematic >> 5) & 3) as Nanos)
    }

    /// Repeat period (bits 0-4: (8 + A) × 2^B / 240 s).
    fn period(&self) -> Nanos {
        let a = (self.typematic & 7) as Nanos;
        let b = ((self.typematic >> 3) & 3) as u32;
        (8 + a) * (1 << b) * 1_000_000_000 / 240
    }

    fn set_defaults(&mut self) {
        self.set = 2;
        self.typematic = TYPEMATIC_DEFAULT;
        self.codes.clear();
        self.repeat_key = None;
        self.repeat_at = None;
    }

    fn reply(&mut self, b: u8) {
        if self.replies.len() < REPLY_QUEUE {
            self.replies.push_back(b);
        }
    }

    /// Queue a set-2 sequence as scan codes in the current set.
    fn queue_codes(&mut self, set2: &[u8]) {
        let mut bytes = Vec::with_capacity(set2.len());
        if self.set == 1 {
            let mut f0 = false;
            translate_stream(set2, &mut f0, &mut bytes);
        } else {
            bytes.extend_from_slice(set2);
        }
        if self.codes.len() + bytes.len() > DEVICE_QUEUE {
            // Buffer overrun: the keyboard sends its overrun code (once) instead.
            let overrun = if self.set == 1 { 0xFF } else { 0x00 };
            if self.codes.back() != Some(&overrun) && self.codes.len() <= DEVICE_QUEUE {
                self.codes.push_back(overrun);
            }
            return;
        }
        self.codes.extend(bytes);
    }

    fn key(&mut self, make: &[u8], pressed: bool, now: Nanos) {
        if make.is_empty() {
            return;
        }
        let typematic = make.first() != Some(&0xE1);
        if pressed {
            if !self.scanning {
                return;
            }
            self.queue_codes(make);
            if typematic {
                self.repeat_key = Some(make.to_vec());
                self.repeat_at = Some(now.saturating_add(self.delay()));
            }
        } else {
            if self.repeat_key.as_deref() == Some(make) {
                self.repeat_key = None;
                self.repeat_at = None;
            }
            if self.scanning {
                let brk = set2_break(make);
                self.queue_codes(&brk);
            }
        }
    }

    fn run_until(&mut self, now: Nanos) {
        let (Some(t), Some(key)) = (self.repeat_at, self.repeat_key.clone()) else {
            return;
        };
        if t > now {
            return;
        }
        // Every repeat due by `now`; those that don't fit in the buffer are lost (a real
        // keyboard doesn't queue repeats behind a host that doesn't read).
        let period = self.period();
        let due = (now - t) / period + 1;
        for _ in 0..due.min(DEVICE_QUEUE as u64) {
            if !self.scanning || self.codes.len() + key.len() > DEVICE_QUEUE {
                break;
            }
            self.queue_codes(&key);
        }
        self.repeat_at = Some(t.saturating_add(due.saturating_mul(period)));
    }

    /// Whether `b` begins a command the keyboard knows.
    fn is_command(b: u8) -> bool {
        matches!(b, 0xED | 0xEE | 0xF0 | 0xF2..=0xFF)
    }

    /// The host sends a byte to the keyboard.
    fn write(&mut self, b: u8) {
        if let Some(cmd) = self.pending.take() {
            let ok = match cmd {
                // Guest sets the LEDs.
                0xED if b <= 7 => {
                    self.leds = b;
                    true
                }
                // Guest sets typematic rate and delay.
                0xF3 if b < 0x80 => {
                    self.typematic = b;
                    true
                }
                // Guest asks for the current scan code set.
                0xF0 if b == 0 => {
                    self.reply(ACK);
                    self.reply(self.set);
                    return;
                }
                // Guest selects scan code set 1, 2 or 3.
                0xF0 if b <= 3 => {
                    self.set = b;
                    true
                }
                _ => false,
            };
            if ok {
                self.reply(ACK);
                return;
            }
            if !Self::is_command(b) {
                self.reply(RESEND);
                return;
            }
        }
        match b {
            // Guest sets the LEDs (parameter follows).
            0xED => {
                self.reply(ACK);
                self.pending = Some(b);
            }
            // Guest checks the keyboard is there.
            0xEE => self.reply(0xEE),
            // Guest gets or sets the scan code set (parameter follows).
            0xF0 => {
                self.reply(ACK);
                self.pending = Some(b);
            }
            // Guest identifies the keyboard: MF2.
            0xF2 => {
                self.reply(ACK);
                self.reply(0xAB);
                self.reply(0x83);
            }
            // Guest sets typematic rate/delay (parameter follows).
            0xF3 => {
                self.reply(ACK);
                self.pending = Some(b);
            }
            // Guest enables scanning.
            0xF4 => {
                self.codes.clear();
                self.scanning = true;
                self.reply(ACK);
            }
            // Guest disables scanning and restores defaults.
            0xF5 => {
                self.set_defaults();
                self.scanning = false;
                self.reply(ACK);
            }
            // Guest restores defaults.
            0xF6 => {
                self.set_defaults();
                self.reply(ACK);
            }
            // Guest sets set-3 key types (all typematic / make-break / make only / ...).
            0xF7..=0xFD => self.reply(ACK),
            // Guest asks for the last byte again.
            0xFE => {
                let last = self.last_sent;
                self.reply(last);
            }
            // Guest resets the keyboard: ACK, then the self-test result.
            0xFF => {
                self.set_defaults();
                self.replies.clear();
                self.leds = 0;
                self.scanning = true;
                self.reply(ACK);
                self.reply(BAT_OK);
            }
            // Anything else is not a keyboard command.
            _ => self.reply(RESEND),
        }
    }

    /// The next byte for the controller.
    fn next_byte(&mut self) -> Option<u8> {
        let b = self
            .replies
            .pop_front()
            .or_else(|| self.codes.pop_front())?;
        self.last_sent = b;
        Some(b)
    }

    fn has_data(&self) -> bool {
        !self.replies.is_empty() || !self.codes.is_empty()
    }
}

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
    replies: VecDeque<u8>,
    /// Motion packets waiting to be sent.
    packets: VecDeque<u8>,
    /// Data reporting enabled (stream mode).
    reporting: bool,
    /// Remote mode: packets only on 0xEB.
    remote: bool,
    /// Wrap (echo) mode.
    wrap: bool,
    /// 2:1 scaling.
    scaling21: bool,
    /// Resolution (0-3: 1, 2, 4, 8 counts/mm).
    resolution: u8,
    /// Samples per second.
    sample_rate: u8,
    /// Device ID (0 standard, 3 IntelliMouse, 4 Explorer).
    id: u8,
    /// The last three sample rates set, for the extension magic.
    rate_history: [u8; 3],
    /// A command that waits for its parameter byte.
    pending: Option<u8>,
    /// Accumulated motion not yet reported (PS/2 directions: y up, z down positive).
    dx: i32,
    dy: i32,
    dz: i32,
    /// Buttons held (bit 0 left, 1 right, 2 middle, 3 fourth, 4 fifth).
    buttons: u8,
    /// The buttons reported last.
    reported_buttons: u8,
    /// The last byte sent, for 0xFE resend.
    last_sent: u8,
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
    fn set_defaults(&mut self) {
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

    fn reply(&mut self, b: u8) {
        if self.replies.len() < REPLY_QUEUE {
            self.replies.push_back(b);
        }
    }

    /// 2:1 scaling (stream mode only).
    fn scale(&self, d: i32) -> i32 {
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
    fn emit_packet(&mut self, stream: bool) {
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

    fn has_motion(&self) -> bool {
        self.dx != 0 || self.dy != 0 || self.dz != 0 || self.buttons != self.reported_buttons
    }

    /// In stream mode with reporting on, turn accumulated motion into a packet once the
    /// previous one has gone (motion coalesces while the guest is slow).
    fn refill(&mut self) {
        let streaming = self.reporting && !self.remote && !self.wrap;
        if streaming && self.packets.is_empty() && self.has_motion() {
            self.emit_packet(true);
        }
    }

    fn motion(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.dx = self.dx.saturating_add(dx).clamp(-4096, 4096);
        self.dy = self.dy.saturating_add(dy).clamp(-4096, 4096);
        self.dz = self.dz.saturating_add(dz).clamp(-4096, 4096);
        self.buttons = buttons & 0x1F;
        self.refill();
    }

    fn is_command(b: u8) -> bool {
        matches!(b, 0xE6..=0xEE | 0xF0 | 0xF2..=0xF6 | 0xFE | 0xFF)
    }

    /// The host sends a byte to the mouse.
    fn write(&mut self, b: u8) {
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

    fn next_byte(&mut self) -> Option<u8> {
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

    fn has_data(&self) -> bool {
        !self.replies.is_empty()
            || !self.packets.is_empty()
            || (self.reporting && !self.remote && !self.wrap && self.has_motion())
    }
}

/// Where the byte in the output buffer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Source {
    Kbd,
    Aux,
}

/// The i8042 controller with its keyboard and mouse.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct I8042 {
    /// Controller RAM; byte 0 is the command byte.
    ram: Vec<u8>,
    /// The output buffer and where its byte came from.
    obuf: Option<(u8, Source)>,
    /// Bytes the controller itself sends (command replies), before device bytes.
    ctrl_queue: VecDeque<(u8, Source)>,
    /// A controller command waiting for its data byte at port 0x60.
    pending: Option<u8>,
    /// Status: system flag.
    sys: bool,
    /// Status: last write was to the command port.
    a2: bool,
    /// Output port (A20, reset).
    output_port: u8,
    /// An F0 from the keyboard seen by the translator, waiting for its code.
    xlat_f0: bool,
    /// No byte is loaded into the output buffer before this time (after a guest read).
    refill_at: Option<Nanos>,
    /// The last byte read from the output buffer (read again if the guest reads it empty).
    last_data: u8,
    /// The keyboard.
    pub kbd: Keyboard,
    /// The mouse.
    pub mouse: Mouse,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// The controller as a BIOS leaves it: keyboard interrupt on, system flag set, translation
    /// on, mouse interrupt off; output port with reset inactive and A20 enabled.
    pub fn new() -> Self {
        let mut ram = vec![0u8; 32];
        ram[0] = CB_KBD_INT | CB_SYS | CB_XLAT;
        I8042 {
            ram,
            obuf: None,
            ctrl_queue: VecDeque::new(),
            pending: None,
            sys: true,
            a2: false,
            output_port: 0xCF,
            xlat_f0: false,
            refill_at: None,
            last_data: 0,
            kbd: Keyboard::default(),
            mouse: Mouse::default(),
        }
    }

    fn cb(&self) -> u8 {
        self.ram.first().copied().unwrap_or(0)
    }

    fn set_cb(&mut self, v: u8) {
        if let Some(r) = self.ram.first_mut() {
            *r = v;
        }
        self.sys = v & CB_SYS != 0;
    }

    // ---- host API ----

    /// A key goes down or up. `make` is its set-2 make sequence (e.g. `[0x1C]` for A,
    /// `[0xE0, 0x75]` for cursor up); the break form is derived. The held key repeats after
    /// the typematic delay.
    pub fn key_event(&mut self, make: &[u8], pressed: bool, ctx: &mut DevCtx) {
        self.kbd.key(make, pressed, ctx.now);
        self.service(ctx);
    }

    /// Mouse motion and buttons. `dx` right-positive, `dy` down-positive and `dz` (wheel)
    /// down-positive, as browsers report them; `buttons` bit 0 left, 1 right, 2 middle,
    /// 3 fourth, 4 fifth.
    pub fn mouse_move(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8, ctx: &mut DevCtx) {
        self.mouse.motion(dx, dy.saturating_neg(), dz, buttons);
        self.service(ctx);
    }

    /// The output port's A20 gate bit.
    pub fn a20(&self) -> bool {
        self.output_port & OP_A20 != 0
    }

    // ---- internals ----

    fn status(&self) -> u8 {
        let mut s = STS_INH;
        if let Some((_, src)) = self.obuf {
            s |= STS_OBF;
            if src == Source::Aux {
                s |= STS_AUXB;
            }
        }
        if self.sys {
            s |= STS_SYS;
        }
        if self.a2 {
            s |= STS_A2;
        }
        s
    }

    fn update_irq(&self, ctx: &mut DevCtx) {
        let cb = self.cb();
        let (k, a) = match self.obuf {
            Some((_, Source::Kbd)) => (cb & CB_KBD_INT != 0, false),
            Some((_, Source::Aux)) => (false, cb & CB_AUX_INT != 0),
            None => (false, false),
        };
        ctx.irq.set(1, k);
        ctx.irq.set(12, a);
    }

    /// Load the output buffer if it is empty and a byte is waiting, then drive the IRQ lines.
    fn service(&mut self, ctx: &mut DevCtx) {
        self.kbd.run_until(ctx.now);
        if let Some(t) = self.refill_at {
            if t <= ctx.now {
                self.refill_at = None;
            }
        }
        if self.obuf.is_none() && self.refill_at.is_none() {
            self.obuf = self.next_output();
        }
        self.update_irq(ctx);
    }

    fn next_output(&mut self) -> Option<(u8, Source)> {
        if let Some(b) = self.ctrl_queue.pop_front() {
            return Some(b);
        }
        let cb = self.cb();
        if cb & CB_KBD_DISABLE == 0 {
            while let Some(b) = self.kbd.next_byte() {
                if cb & CB_XLAT == 0 {
                    return Some((b, Source::Kbd));
                }
                if b == 0xF0 {
                    self.xlat_f0 = true;
                    continue;
                }
                let t = translate(b) | if self.xlat_f0 { 0x80 } else { 0 };
                self.xlat_f0 = false;
                return Some((t, Source::Kbd));
            }
        }
        if cb & CB_AUX_DISABLE == 0 {
            if let Some(b) = self.mouse.next_byte() {
                return Some((b, Source::Aux));
            }
        }
        None
    }

    fn reply(&mut self, b: u8) {
        self.queue_ctrl(b, Source::Kbd);
    }

    fn queue_ctrl(&mut self, b: u8, src: Source) {
        if self.ctrl_queue.len() < REPLY_QUEUE {
            self.ctrl_queue.push_back((b, src));
        }
    }

    fn write_output_port(&mut self, v: u8, ctx: &mut DevCtx) {
        let old = self.output_port;
        self.output_port = v;
        if (old ^ v) & OP_A20 != 0 {
            ctx.board.a20 = Some(v & OP_A20 != 0);
        }
        if v & OP_RESET == 0 {
            // The reset line is active low; the CPU resets and the line returns high.
            ctx.board.reset = true;
            self.output_port |= OP_RESET;
        }
    }

    fn output_port_value(&self) -> u8 {
        let mut v = self.output_port & !(OP_KBD_OBF | OP_AUX_OBF);
        match self.obuf {
            Some((_, Source::Kbd)) => v |= OP_KBD_OBF,
            Some((_, Source::Aux)) => v |= OP_AUX_OBF,
            None => {}
        }
        v
    }

    fn command(&mut self, cmd: u8, ctx: &mut DevCtx) {
        match cmd {
            // Guest reads the command byte or another controller RAM byte.
            0x20..=0x3F => {
                let v = self.ram.get((cmd & 0x1F) as usize).copied().unwrap_or(0);
                self.reply(v);
            }
            // Guest will write the command byte or another RAM byte at port 0x60.
            0x60..=0x7F => self.pending = Some(cmd),
            // Guest checks for a password: none installed.
            CMD_PASSWORD_TEST => self.reply(0xF1),
            // Guest disables the mouse interface.
            CMD_AUX_DISABLE => self.set_cb(self.cb() | CB_AUX_DISABLE),
            // Guest enables the mouse interface.
            CMD_AUX_ENABLE => self.set_cb(self.cb() & !CB_AUX_DISABLE),
            // Guest tests the mouse interface: no error.
            CMD_AUX_TEST => self.reply(0x00),
            // Guest runs the controller self test.
            CMD_SELF_TEST => {
                self.sys = true;
                self.reply(0x55);
            }
            // Guest tests the keyboard interface: no error.
            CMD_KBD_TEST => self.reply(0x00),
            // Guest disables the keyboard interface.
            CMD_KBD_DISABLE => self.set_cb(self.cb() | CB_KBD_DISABLE),
            // Guest enables the keyboard interface.
            CMD_KBD_ENABLE => self.set_cb(self.cb() & !CB_KBD_DISABLE),
            // Guest reads the input port: keyboard not inhibited, no jumper.
            CMD_READ_INPUT => self.reply(0xA0),
            // Guest reads the output port.
            CMD_READ_OUTPUT => {
                let v = self.output_port_value();
                self.reply(v);
            }
            // Guest will write the output port / a byte for the keyboard buffer / a byte for
            // the mouse buffer / a byte to the mouse, at port 0x60.
            CMD_WRITE_OUTPUT | CMD_WRITE_KBD_OBUF | CMD_WRITE_AUX_OBUF | CMD_WRITE_AUX => {
                self.pending = Some(cmd)
            }
            // Guest turns A20 off.
            CMD_A20_OFF => self.write_output_port(self.output_port & !OP_A20, ctx),
            // Guest turns A20 on.
            CMD_A20_ON => self.write_output_port(self.output_port | OP_A20, ctx),
            // Guest reads the test inputs.
            CMD_READ_TEST => self.reply(0x00),
            // Guest pulses output port bits 0-3 low where the command's bits are 0; bit 0 is
            // the reset line (0xFE resets the CPU).
            0xF0..=0xFF if cmd & 1 == 0 => ctx.board.reset = true,
            // Unknown commands are ignored.
            _ => {}
        }
    }

    fn write_data(&mut self, v: u8, ctx: &mut DevCtx) {
        match self.pending.take() {
            // Guest writes the command byte or a RAM byte.
            Some(c @ 0x60..=0x7F) => {
                if c == CMD_WRITE_CB {
                    self.set_cb(v);
                } else if let Some(r) = self.ram.get_mut((c & 0x1F) as usize) {
                    *r = v;
                }
            }
            // Guest writes the output port (A20, reset).
            Some(CMD_WRITE_OUTPUT) => self.write_output_port(v, ctx),
            // Guest places a byte in the output buffer as if from the keyboard.
            Some(CMD_WRITE_KBD_OBUF) => self.queue_ctrl(v, Source::Kbd),
            // Guest places a byte in the output buffer as if from the mouse.
            Some(CMD_WRITE_AUX_OBUF) => self.queue_ctrl(v, Source::Aux),
            // Guest sends a byte to the mouse.
            Some(CMD_WRITE_AUX) => self.mouse.write(v),
            // Guest sends a byte to the keyboard; this re-enables the keyboard interface.
            _ => {
                self.set_cb(self.cb() & !CB_KBD_DISABLE);
                self.kbd.write(v);
            }
        }
    }
}

impl Device for I8042 {
    fn read(&mut self, at: At, size: u8, ctx: &mut DevCtx) -> u32 {
        let offset = at.addr().wrapping_sub(BASE) as u16;
        self.service(ctx);
        let v = match offset {
            // Guest reads the output buffer; the next byte follows after REFILL_DELAY.
            PORT_DATA => match self.obuf.take() {
                Some((b, _)) => {
                    self.refill_at = Some(ctx.now.saturating_add(REFILL_DELAY));
                    self.last_data = b;
                    b as u32
                }
                // Reading an empty buffer returns the last byte again.
                None => self.last_data as u32,
            },
            // Guest polls the status register.
            PORT_CMD => self.status() as u32,
            _ => 0xFF,
        };
        self.service(ctx);
        let fill = if size >= 4 {
            0xFFFF_FF00
        } else if size == 2 {
            0xFF00
        } else {
            0
        };
        v | fill
    }

    fn write(&mut self, at: At, _size: u8, value: u32, ctx: &mut DevCtx) {
        let offset = at.addr().wrapping_sub(BASE) as u16;
        self.service(ctx);
        let v = value as u8;
        match offset {
            // Guest writes data: a controller command's parameter or a keyboard byte.
            PORT_DATA => {
                self.a2 = false;
                self.write_data(v, ctx);
            }
            // Guest writes a controller command.
            PORT_CMD => {
                self.a2 = true;
                self.pending = None;
                self.command(v, ctx);
            }
            _ => {}
        }
        self.service(ctx);
    }
}

impl Timed for I8042 {
    fn next_deadline(&self) -> Option<Nanos> {
        let refill = if self.obuf.is_none() && self.has_waiting() {
            self.refill_at
        } else {
            None
        };
        let repeat = if self.kbd.repeat_key.is_some() {
            self.kbd.repeat_at
        } else {
            None
        };
        match (refill, repeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn advance(&mut self, ctx: &mut DevCtx) {
        self.service(ctx);
    }
}

impl I8042 {
    fn has_waiting(&self) -> bool {
        !self.ctrl_queue.is_empty() || self.kbd.has_data() || self.mouse.has_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rig = crate::dev::testing::Rig<I8042>;

    fn rig() -> Rig {
        Rig::new(I8042::new(), BASE)
    }

    impl Rig {
        /// Read one byte as a polling driver does: wait for OBF, read 0x60.
        fn read_byte(&mut self) -> Option<u8> {
            for _ in 0..100 {
                if self.inb(PORT_CMD) & STS_OBF != 0 {
                    return Some(self.inb(PORT_DATA));
                }
                let t = self.now + 10_000;
                self.run_to(t);
            }
            None
        }
        fn read_all(&mut self) -> Vec<u8> {
            std::iter::from_fn(|| self.read_byte()).collect()
        }
        fn key(&mut self, make: &[u8], pressed: bool) {
            let (kc, mut ctx) = self.ctx();
            kc.key_event(make, pressed, &mut ctx);
        }
    }

    #[test]
    fn self_test_and_command_byte() {
        let mut r = rig();
        assert_eq!(r.inb(PORT_CMD), STS_INH | STS_SYS);
        r.outb(PORT_CMD, CMD_SELF_TEST);
        assert_eq!(r.inb(PORT_CMD), STS_INH | STS_SYS | STS_A2 | STS_OBF);
        assert_eq!(r.inb(PORT_DATA), 0x55);
        r.outb(PORT_CMD, CMD_KBD_TEST);
        assert_eq!(r.read_all(), [0x00]);
        r.outb(PORT_CMD, CMD_AUX_TEST);
        assert_eq!(r.read_all(), [0x00]);
        r.outb(PORT_CMD, CMD_READ_CB);
        assert_eq!(r.read_all(), [0x45]);
        // Linux's i8042_check_aux: AUX disable/enable flip CTR bit 5.
        r.outb(PORT_CMD, CMD_AUX_DISABLE);
        r.outb(PORT_CMD, CMD_READ_CB);
        assert_eq!(r.read_all(), [0x65]);
        r.outb(PORT_CMD, CMD_AUX_ENABLE);
        r.outb(PORT_CMD, CMD_READ_CB);
        assert_eq!(r.read_all(), [0x45]);
        // Write a new command byte: both interrupts, translation, SYS clear.
        r.outb(PORT_CMD, CMD_WRITE_CB);
        r.outb(PORT_DATA, 0x43);
        assert_eq!(r.inb(PORT_CMD) & (STS_SYS | STS_A2), 0);
        r.outb(PORT_CMD, CMD_READ_CB);
        assert_eq!(r.read_all(), [0x43]);
        // AUX loopback (0xD3) comes back as mouse data with IRQ 12.
        r.outb(PORT_CMD, CMD_WRITE_AUX_OBUF);
        r.outb(PORT_DATA, 0xA5);
        assert_eq!(r.inb(PORT_CMD) & (STS_OBF | STS_AUXB), STS_OBF | STS_AUXB);
        assert!(r.irq.get(12) && !r.irq.get(1));
        assert_eq!(r.inb(PORT_DATA), 0xA5);
        assert!(!r.irq.get(12));
    }

    #[test]
    fn keyboard_reset_and_identify_with_and_without_translation() {
        let mut r = rig();
        r.outb(PORT_DATA, 0xFF);
        assert!(r.irq.get(1));
        assert_eq!(r.read_all(), [ACK, BAT_OK]);
        // Translation on: the ID's 0x83 reads as 0x41 (as Linux's atkbd expects).
        r.outb(PORT_DATA, 0xF2);
        assert_eq!(r.read_all(), [ACK, 0xAB, 0x41]);
        r.outb(PORT_DATA, 0xF0);
        r.outb(PORT_DATA, 0x00);
        assert_eq!(r.read_all(), [ACK, ACK, 0x41]);
        // Translation off: raw set 2.
        r.outb(PORT_CMD, CMD_WRITE_CB);
        r.outb(PORT_DATA, 0x03);
        r.outb(PORT_DATA, 0xF2);
        assert_eq!(r.read_all(), [ACK, 0xAB, 0x83]);
        r.outb(PORT_DATA, 0xF0);
        r.outb(PORT_DATA, 0x00);
        assert_eq!(r.read_all(), [ACK, ACK, 0x02]);
        r.outb(PORT_DATA, 0xED);
        r.outb(PORT_DATA, 0x07);
        assert_eq!(r.read_all(), [ACK, ACK]);
        assert_eq!(r.dev.kbd.leds, 7);
        r.outb(PORT_DATA, 0xEE);
        assert_eq!(r.read_all(), [0xEE]);
        r.outb(PORT_DATA, 0xFE);
        assert_eq!(r.read_all(), [0xEE]);
        r.outb(PORT_DATA, 0x12);
        assert_eq!(r.read_all(), [RESEND]);
        r.outb(PORT_DATA, 0xF3);
        r.outb(PORT_DATA, 0x00);
        r.outb(PORT_DATA, 0xF5);
        r.outb(PORT_DATA, 0xF6);
        r.outb(PORT_DATA, 0xF4);
        assert_eq!(r.read_all(), [ACK, ACK, ACK, ACK, ACK]);
    }

    #[test]
    fn key_press_is_translated_to_set1_one_irq_per_byte() {
        let mut r = rig();
        r.key(&[0x1C], true); // 'A'
        assert!(r.irq.get(1));
        assert_eq!(r.inb(PORT_DATA), 0x1E);
        assert!(!r.irq.get(1));
        r.key(&[0x1C], false);
        assert!(!r.irq.get(1), "the line stays low until the refill delay");
        r.run_to(r.now + REFILL_DELAY);
        assert!(r.irq.get(1));
        assert_eq!(r.inb(PORT_DATA), 0x9E);
        // Cursor up: E0 75 -> E0 48, break E0 C8, one byte per interrupt.
        r.run_to(r.now + REFILL_DELAY);
        r.key(&[0xE0, 0x75], true);
        r.key(&[0xE0, 0x75], false);
        let mut got = Vec::new();
        for _ in 0..4 {
            assert!(r.irq.get(1));
            got.push(r.inb(PORT_DATA));
            assert!(!r.irq.get(1));
            r.run_to(r.now + REFILL_DELAY);
        }
        assert_eq!(got, [0xE0, 0x48, 0xE0, 0xC8]);
        assert!(!r.irq.get(1));
        // Without translation, set 2 with F0 breaks (Print Screen reverses its codes).
        r.outb(PORT_CMD, CMD_WRITE_CB);
        r.outb(PORT_DATA, 0x01);
        r.key(&[0xE0, 0x12, 0xE0, 0x7C], true);
        r.key(&[0xE0, 0x12, 0xE0, 0x7C], false);
        assert_eq!(
            r.read_all(),
            [0xE0, 0x12, 0xE0, 0x7C, 0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12]
        );
        // Keyboard set 1 itself (translation off).
        r.outb(PORT_DATA, 0xF0);
        r.outb(PORT_DATA, 0x01);
        assert_eq!(r.read_all(), [ACK, ACK]);
        r.key(&[0x1C], true);
        r.key(&[0x1C], false);
        assert_eq!(r.read_all(), [0x1E, 0x9E]);
    }

    #[test]
    fn typematic_repeat_after_delay() {
        let mut r = rig();
        // 0xF3 0x20: delay 500 ms, 30 characters/s (33.3 ms).
        r.outb(PORT_DATA, 0xF3);
        r.outb(PORT_DATA, 0x20);
        assert_eq!(r.read_all(), [ACK, ACK]);
        let t0 = r.now;
        r.key(&[0x1C], true);
        assert_eq!(r.read_all(), [0x1E]);
        assert_eq!(r.dev.next_deadline(), Some(t0 + 500_000_000));
        r.run_to(t0 + 499_000_000);
        assert_eq!(r.inb(PORT_CMD) & STS_OBF, 0);
        r.run_to(t0 + 500_000_000);
        assert_eq!(r.inb(PORT_DATA), 0x1E);
        // Two more repeats by 500 + 2 × 33.33 ms.
        r.run_to(t0 + 500_000_000 + 2 * 33_333_333 + 1);
        assert_eq!(r.read_all(), [0x1E, 0x1E]);
        r.key(&[0x1C], false);
        assert_eq!(r.read_all(), [0x9E]);
        assert_eq!(r.dev.next_deadline(), None);
        r.run_to(t0 + 2_000_000_000);
        assert_eq!(r.inb(PORT_CMD) & STS_OBF, 0);
    }

    #[test]
    fn a20_and_reset_through_output_port() {
        let mut r = rig();
        r.outb(PORT_CMD, CMD_READ_OUTPUT);
        assert_eq!(r.read_all(), [0xCF]);
        r.outb(PORT_CMD, CMD_WRITE_OUTPUT);
        r.outb(PORT_DATA, 0xCD);
        assert_eq!(r.board.a20, Some(false));
        assert!(!r.board.reset);
        r.outb(PORT_CMD, CMD_A20_ON);
        assert_eq!(r.board.a20, Some(true));
        assert!(r.dev.a20());
        r.outb(PORT_CMD, CMD_A20_OFF);
        assert_eq!(r.board.a20, Some(false));
        r.outb(PORT_CMD, CMD_READ_OUTPUT);
        assert_eq!(r.read_all(), [0xCD]);
        r.outb(PORT_CMD, 0xFF); // pulse nothing
        assert!(!r.board.reset);
        r.outb(PORT_CMD, 0xFE);
        assert!(r.board.reset);
        r.board.reset = false;
        r.outb(PORT_CMD, CMD_WRITE_OUTPUT);
        r.outb(PORT_DATA, 0xFE); // reset bit low
        assert!(r.board.reset);
    }

    #[test]
    fn intellimouse_detection_and_four_byte_packet() {
        let mut r = rig();
        r.outb(PORT_CMD, CMD_WRITE_CB);
        r.outb(PORT_DATA, 0x47); // both IRQs, XLAT, SYS
        let send = |r: &mut Rig, b: u8| {
            r.outb(PORT_CMD, CMD_WRITE_AUX);
            r.outb(PORT_DATA, b);
        };
        send(&mut r, 0xFF);
        assert!(r.irq.get(12));
        assert_eq!(r.inb(PORT_CMD) & STS_AUXB, STS_AUXB);
        assert_eq!(r.read_all(), [ACK, BAT_OK, 0x00]);
        send(&mut r, 0xF2);
        assert_eq!(r.read_all(), [ACK, 0x00]);
        for rate in [200, 100, 80] {
            send(&mut r, 0xF3);
            send(&mut r, rate);
        }
        assert_eq!(r.read_all(), [ACK; 6]);
        send(&mut r, 0xF2);
        assert_eq!(r.read_all(), [ACK, 0x03]);
        send(&mut r, 0xE8);
        send(&mut r, 0x03);
        send(&mut r, 0xE9);
        assert_eq!(r.read_all(), [ACK, ACK, ACK, 0x00, 0x03, 80]);
        send(&mut r, 0xF4);
        assert_eq!(r.read_all(), [ACK]);
        // Right 5, up 3 (host dy -3), wheel down 1, left button.
        let now = r.now;
        let mut ctx = DevCtx {
            now,
            irq: &mut r.irq,
            board: &mut r.board,
        };
        r.dev.mouse_move(5, -3, 1, 1, &mut ctx);
        assert!(r.irq.get(12));
        assert_eq!(r.read_all(), [0x09, 5, 3, 1]);
        // Left 300 (overflow), down 2: X sign+overflow, Y sign.
        let now = r.now;
        let mut ctx = DevCtx {
            now,
            irq: &mut r.irq,
            board: &mut r.board,
        };
        r.dev.mouse_move(-300, 2, 0, 0, &mut ctx);
        assert_eq!(r.read_all(), [0x08 | 0x10 | 0x40 | 0x20, 0x00, 0xFE, 0x00]);
        // Remote mode: packets only on request.
        send(&mut r, 0xF0);
        assert_eq!(r.read_all(), [ACK]);
        let mut ctx = DevCtx {
            now: r.now,
            irq: &mut r.irq,
            board: &mut r.board,
        };
        r.dev.mouse_move(1, 0, 0, 2, &mut ctx);
        assert_eq!(r.inb(PORT_CMD) & STS_OBF, 0);
        send(&mut r, 0xEB);
        assert_eq!(r.read_all(), [ACK, 0x0A, 1, 0, 0]);
        // Explorer magic after IntelliMouse: ID 4.
        for rate in [200, 200, 80] {
            send(&mut r, 0xF3);
            send(&mut r, rate);
        }
        send(&mut r, 0xF2);
        assert_eq!(r.read_all(), [ACK, ACK, ACK, ACK, ACK, ACK, ACK, 0x04]);
    }

    #[test]
    fn disabled_keyboard_holds_its_bytes() {
        let mut r = rig();
        r.outb(PORT_CMD, CMD_KBD_DISABLE);
        r.key(&[0x1C], true);
        assert_eq!(r.inb(PORT_CMD) & STS_OBF, 0);
        r.outb(PORT_CMD, CMD_KBD_ENABLE);
        assert_eq!(r.read_all(), [0x1E]);
    }

    #[test]
    fn the_command_port_as_its_own_range_and_a_held_key_over_a_long_idle() {
        let mut r = rig();
        // The board maps 0x64 as a range of its own.
        r.write_at(0x64, 0, 1, CMD_SELF_TEST.into());
        assert_eq!(r.read_at(0x64, 0, 1) as u8 & STS_OBF, STS_OBF);
        assert_eq!(r.read_all(), [0x55]);
        // A key held for an hour of virtual time: the buffer holds what fits (5 repeats of
        // E0 75 plus the first), never more, and the next repeat is still on the period grid.
        r.key(&[0xE0, 0x75], true);
        let t0 = r.now;
        r.advance_to(t0 + 3_600_000_000_000);
        let bytes = r.read_all();
        assert_eq!(bytes.len(), 16);
        assert!(bytes.chunks(2).all(|c| c == [0xE0, 0x48]));
        let next = r.dev.next_deadline().unwrap();
        assert!(next > r.now && next <= r.now + 91_666_667);
    }

    #[test]
    fn any_port_any_sequence_never_panics() {
        let mut r = rig();
        let mut x: u32 = 12345;
        for _ in 0..20000 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let off = (x >> 8) % 6;
            let v = (x >> 16) as u8;
            let size = [1u8, 2, 4][(x % 3) as usize];
            let now = r.now;
            let mut ctx = DevCtx {
                now,
                irq: &mut r.irq,
                board: &mut r.board,
            };
            if x & 0x100 != 0 {
                r.dev.write(At::new(BASE, off), size, v as u32, &mut ctx);
            } else {
                r.dev.read(At::new(BASE, off), size, &mut ctx);
            }
            if x & 0x7000 == 0 {
                r.dev.key_event(&[v, v], x & 1 != 0, &mut ctx);
                r.dev.mouse_move(v as i32 * 50, -(v as i32), 3, v, &mut ctx);
            }
            r.now += 1000;
            r.board.reset = false;
        }
        // The state round-trips through serde.
        let json = serde_json::to_string(&r.dev).unwrap();
        let back: I8042 = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}
