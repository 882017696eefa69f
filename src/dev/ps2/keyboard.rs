//! The PS/2 MF2 keyboard behind the i8042: scan code set 2, typematic repeat, its commands.

use super::*;
use crate::dev::Nanos;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

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

/// A PS/2 MF2 keyboard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Keyboard {
    /// Replies to host commands (sent before scan codes).
    pub(super) replies: VecDeque<u8>,
    /// Scan codes waiting to be sent.
    pub(super) codes: VecDeque<u8>,
    /// Scanning enabled.
    pub(super) scanning: bool,
    /// Scan code set (1, 2 or 3; set 3 is reported but set-2 codes are sent).
    pub(super) set: u8,
    /// LED state (bit 0 scroll, 1 num, 2 caps lock).
    pub leds: u8,
    /// Typematic rate/delay byte (0xF3 parameter).
    pub(super) typematic: u8,
    /// A command that waits for its parameter byte.
    pub(super) pending: Option<u8>,
    /// The last byte sent, for 0xFE resend.
    pub(super) last_sent: u8,
    /// The set-2 make sequence of the key that repeats while held.
    pub(super) repeat_key: Option<Vec<u8>>,
    /// When that key next repeats.
    pub(super) repeat_at: Option<Nanos>,
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
    pub(super) fn delay(&self) -> Nanos {
        250_000_000 * (1 + ((self.typematic >> 5) & 3) as Nanos)
    }

    /// Repeat period (bits 0-4: (8 + A) × 2^B / 240 s).
    pub(super) fn period(&self) -> Nanos {
        let a = (self.typematic & 7) as Nanos;
        let b = ((self.typematic >> 3) & 3) as u32;
        (8 + a) * (1 << b) * 1_000_000_000 / 240
    }

    pub(super) fn set_defaults(&mut self) {
        self.set = 2;
        self.typematic = TYPEMATIC_DEFAULT;
        self.codes.clear();
        self.repeat_key = None;
        self.repeat_at = None;
    }

    pub(super) fn reply(&mut self, b: u8) {
        if self.replies.len() < REPLY_QUEUE {
            self.replies.push_back(b);
        }
    }

    /// Queue a set-2 sequence as scan codes in the current set.
    pub(super) fn queue_codes(&mut self, set2: &[u8]) {
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

    pub(super) fn key(&mut self, make: &[u8], pressed: bool, now: Nanos) {
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

    pub(super) fn run_until(&mut self, now: Nanos) {
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
    pub(super) fn is_command(b: u8) -> bool {
        matches!(b, 0xED | 0xEE | 0xF0 | 0xF2..=0xFF)
    }

    /// The host sends a byte to the keyboard.
    pub(super) fn write(&mut self, b: u8) {
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
    pub(super) fn next_byte(&mut self) -> Option<u8> {
        let b = self
            .replies
            .pop_front()
            .or_else(|| self.codes.pop_front())?;
        self.last_sent = b;
        Some(b)
    }

    pub(super) fn has_data(&self) -> bool {
        !self.replies.is_empty() || !self.codes.is_empty()
    }
}
