//! The i8042 controller: its output buffer, command byte, output port and commands, and the
//! set-2 to set-1 translation (see the module comment of [`super`]).

use super::*;
use crate::dev::{At, DevCtx, Device, Timed};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The standard 8042 translation from scan code set 2 to set 1 (bytes 0x80 and above pass
/// through, except 0x83 (F7) and 0x84 (Alt+SysRq)).
pub(super) const XLAT: [u8; 0x85] = [
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

/// Translate a set-2 byte stream to set 1 (F0 prefixes become the break bit), carrying a
/// pending F0 in `f0`.
pub(super) fn translate_stream(bytes: &[u8], f0: &mut bool, out: &mut Vec<u8>) {
    for &b in bytes {
        if b == 0xF0 {
            *f0 = true;
        } else {
            out.push(translate(b) | if *f0 { 0x80 } else { 0 });
            *f0 = false;
        }
    }
}

/// Where the byte in the output buffer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Source {
    Kbd,
    Aux,
}

/// The i8042 controller with its keyboard and mouse.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct I8042 {
    /// Controller RAM; byte 0 is the command byte.
    pub(super) ram: Vec<u8>,
    /// The output buffer and where its byte came from.
    pub(super) obuf: Option<(u8, Source)>,
    /// Bytes the controller itself sends (command replies), before device bytes.
    pub(super) ctrl_queue: VecDeque<(u8, Source)>,
    /// A controller command waiting for its data byte at port 0x60.
    pub(super) pending: Option<u8>,
    /// Status: system flag.
    pub(super) sys: bool,
    /// Status: last write was to the command port.
    pub(super) a2: bool,
    /// Output port (A20, reset).
    pub(super) output_port: u8,
    /// An F0 from the keyboard seen by the translator, waiting for its code.
    pub(super) xlat_f0: bool,
    /// No byte is loaded into the output buffer before this time (after a guest read).
    pub(super) refill_at: Option<Nanos>,
    /// The last byte read from the output buffer (read again if the guest reads it empty).
    pub(super) last_data: u8,
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

    pub(super) fn cb(&self) -> u8 {
        self.ram.first().copied().unwrap_or(0)
    }

    pub(super) fn set_cb(&mut self, v: u8) {
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

    pub(super) fn status(&self) -> u8 {
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

    pub(super) fn update_irq(&self, ctx: &mut DevCtx) {
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
    pub(super) fn service(&mut self, ctx: &mut DevCtx) {
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

    pub(super) fn next_output(&mut self) -> Option<(u8, Source)> {
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

    pub(super) fn reply(&mut self, b: u8) {
        self.queue_ctrl(b, Source::Kbd);
    }

    pub(super) fn queue_ctrl(&mut self, b: u8, src: Source) {
        if self.ctrl_queue.len() < REPLY_QUEUE {
            self.ctrl_queue.push_back((b, src));
        }
    }

    pub(super) fn write_output_port(&mut self, v: u8, ctx: &mut DevCtx) {
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

    pub(super) fn output_port_value(&self) -> u8 {
        let mut v = self.output_port & !(OP_KBD_OBF | OP_AUX_OBF);
        match self.obuf {
            Some((_, Source::Kbd)) => v |= OP_KBD_OBF,
            Some((_, Source::Aux)) => v |= OP_AUX_OBF,
            None => {}
        }
        v
    }

    pub(super) fn command(&mut self, cmd: u8, ctx: &mut DevCtx) {
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

    pub(super) fn write_data(&mut self, v: u8, ctx: &mut DevCtx) {
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
    pub(super) fn has_waiting(&self) -> bool {
        !self.ctrl_queue.is_empty() || self.kbd.has_data() || self.mouse.has_data()
    }
}
