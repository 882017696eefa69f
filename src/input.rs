//! Host input that must not be lost: typed text and key events for the PS/2 keyboard, and
//! bytes for the serial port, queued by the host and fed to the devices only as fast as the
//! guest takes them.
//!
//! # Why pacing
//!
//! A real keyboard buffers 16 bytes and then reports an overrun; a UART holds at most its FIFO.
//! A host that pastes a paragraph (or a test that types a command) produces input far faster
//! than a guest reads it, so the host keeps the queue and [`HostInput::pump`] hands over:
//!
//! - **Keys, one batch at a time, only when the controller has nothing waiting for the guest.**
//!   A batch is one key event from the host, or all the events that type one character (Shift
//!   down, key down, key up, Shift up), at most 8 bytes of scan codes, so it always fits the
//!   keyboard's 16-byte buffer, and the guest sees every make and break. A typed character's
//!   press and release go in together so the keyboard's auto-repeat never fires between them,
//!   however long the guest takes to read them.
//! - **Serial bytes while the UART's receiver has room.**
//!
//! Whether the keyboard will take a batch is decided by a dry run on a copy of the controller
//! ([`keyboard_accepts`]): it looks at what the guest would read, so it covers every reason a key
//! could be lost (bytes still waiting, the guest disabled the keyboard interface or scanning)
//! without knowing the controller's internals.

use crate::dev::ps2::{self, BASE, I8042, PORT_CMD, STS_AUXB, STS_OBF};
use crate::dev::{At, BoardSignals, DevCtx, Device, IrqLines, Nanos};
use crate::keymap;
use crate::machine::Machine;
use std::collections::VecDeque;

/// A key goes down (true) or up (false); the key is named by its set-2 make sequence.
pub type KeyEvent = (&'static [u8], bool);

/// The most key batches the host queue holds (a long paste at a few hundred characters a
/// second); more are refused rather than held without bound.
pub const MAX_KEY_BATCHES: usize = 65_536;
/// The most serial bytes the host queue holds.
pub const MAX_SERIAL_BYTES: usize = 1 << 20;

/// Where paced input goes: the machine, or bare devices in tests.
pub trait InputSink {
    /// Whether the keyboard would deliver `first` (the first event of a batch) to the guest
    /// now, with nothing else waiting before it.
    fn keyboard_accepts(&mut self, first: KeyEvent) -> bool;
    /// Send a key event to the keyboard.
    fn key_event(&mut self, event: KeyEvent);
    /// Give the serial port (COM1) a byte if its receiver has room; false if it has none.
    fn serial_byte(&mut self, byte: u8) -> bool;
}

impl InputSink for Machine {
    fn keyboard_accepts(&mut self, first: KeyEvent) -> bool {
        let now = self.now();
        keyboard_accepts(&self.board().i8042.borrow(), now, first)
    }
    fn key_event(&mut self, (make, pressed): KeyEvent) {
        Machine::key_event(self, make, pressed);
    }
    fn serial_byte(&mut self, byte: u8) -> bool {
        self.serial_input(0, byte)
    }
}

/// Whether the controller `kc` at virtual time `now` would pass the key event `first` to the
/// guest next, with nothing queued ahead of it: tried on a copy. On the copy, time moves on by
/// the controller's refill delay (so a byte that follows one the guest just read shows up),
/// then the status register must show an empty output buffer (nothing waiting from the
/// controller, the keyboard or the mouse), and after the event it must show a keyboard byte.
/// The second check fails while the guest has disabled the keyboard interface or scanning (the
/// bytes would be held or dropped), and given it passes, the first proves the keyboard's buffer
/// is empty, so any batch of up to 16 bytes fits.
pub fn keyboard_accepts(kc: &I8042, now: Nanos, first: KeyEvent) -> bool {
    let mut probe = kc.clone();
    let mut irq = IrqLines::default();
    let mut board = BoardSignals::default();
    let mut ctx = DevCtx {
        now: now.saturating_add(ps2::REFILL_DELAY),
        irq: &mut irq,
        board: &mut board,
    };
    let status = probe.read(At::new(BASE, PORT_CMD.into()), 1, &mut ctx) as u8;
    if status & STS_OBF != 0 {
        return false;
    }
    probe.key_event(first.0, first.1, &mut ctx);
    let status = probe.read(At::new(BASE, PORT_CMD.into()), 1, &mut ctx) as u8;
    status & STS_OBF != 0 && status & STS_AUXB == 0
}

/// What the host queued and the guest has not taken yet.
#[derive(Debug, Default)]
pub struct HostInput {
    keys: VecDeque<Vec<KeyEvent>>,
    serial: VecDeque<u8>,
}

impl HostInput {
    /// Queue a key event of the key `code` (a `KeyboardEvent.code`). Returns false if a PC
    /// keyboard has no such key or the queue is full. Releasing Pause queues nothing (the key
    /// sends its whole sequence when pressed).
    pub fn key(&mut self, code: &str, pressed: bool) -> bool {
        let Some(make) = keymap::scancode(code) else {
            return false;
        };
        if !pressed && !keymap::has_break(make) {
            return true;
        }
        self.push_batch(vec![(make, pressed)])
    }

    /// Queue the key strokes that type `text` on a US keyboard ("\r\n" is one Enter). Returns
    /// how many characters were not queued (no key types them, or the queue is full).
    pub fn type_text(&mut self, text: &str) -> usize {
        let mut skipped = 0;
        let mut prev = None;
        for c in text.chars() {
            let after_cr = prev == Some('\r');
            prev = Some(c);
            if c == '\n' && after_cr {
                continue;
            }
            let queued = keymap::stroke_for(c).is_some_and(|s| self.push_batch(s.events()));
            if !queued {
                skipped += 1;
            }
        }
        skipped
    }

    /// Queue bytes for the serial port. Returns how many did not fit in the queue.
    pub fn send_serial(&mut self, bytes: &[u8]) -> usize {
        let room = MAX_SERIAL_BYTES.saturating_sub(self.serial.len());
        let take = bytes.len().min(room);
        self.serial.extend(&bytes[..take]);
        bytes.len() - take
    }

    fn push_batch(&mut self, batch: Vec<KeyEvent>) -> bool {
        if batch.is_empty() || self.keys.len() >= MAX_KEY_BATCHES {
            return false;
        }
        self.keys.push_back(batch);
        true
    }

    /// Whether anything is still queued.
    pub fn busy(&self) -> bool {
        !self.keys.is_empty() || !self.serial.is_empty()
    }

    /// Whether key events are still queued.
    pub fn keys_pending(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Drop everything queued (the machine was reset).
    pub fn clear(&mut self) {
        self.keys.clear();
        self.serial.clear();
    }

    /// Hand the devices what they can take now: key batches while the keyboard accepts them
    /// (in practice one per call, as a batch keeps the controller busy until the guest read it),
    /// and serial bytes while the UART has room. Returns whether anything was handed over. Call
    /// it often (between short slices) while [`HostInput::busy`].
    pub fn pump(&mut self, sink: &mut impl InputSink) -> bool {
        let mut fed = false;
        while let Some(batch) = self.keys.front() {
            if !batch.first().is_some_and(|&e| sink.keyboard_accepts(e)) {
                break;
            }
            for &e in batch {
                sink.key_event(e);
            }
            self.keys.pop_front();
            fed = true;
        }
        while let Some(&b) = self.serial.front() {
            if !sink.serial_byte(b) {
                break;
            }
            self.serial.pop_front();
            fed = true;
        }
        fed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::ps2::{set2_break, CMD_KBD_DISABLE, CMD_KBD_ENABLE, PORT_DATA};
    use crate::dev::uart::{Uart, REG_DATA, REG_IIR_FCR, REG_LCR, REG_LSR};

    /// Bare devices with a guest simulated by the test: no CPU, no board.
    struct Rig {
        kc: I8042,
        uart: Uart,
        irq: IrqLines,
        signals: BoardSignals,
        now: Nanos,
        /// Bytes the guest read from port 0x60 and from the UART.
        kbd_seen: Vec<u8>,
        serial_seen: Vec<u8>,
    }

    impl Rig {
        fn new() -> Rig {
            Rig {
                kc: I8042::new(),
                uart: Uart::new(4),
                irq: IrqLines::default(),
                signals: BoardSignals::default(),
                now: 0,
                kbd_seen: Vec::new(),
                serial_seen: Vec::new(),
            }
        }

        fn ctx(&mut self) -> (DevCtx<'_>, &mut I8042, &mut Uart) {
            (
                DevCtx {
                    now: self.now,
                    irq: &mut self.irq,
                    board: &mut self.signals,
                },
                &mut self.kc,
                &mut self.uart,
            )
        }

        /// The guest writes a controller command (port 0x64) or a keyboard byte (port 0x60).
        fn kc_write(&mut self, port: u16, v: u8) {
            let (mut ctx, kc, _) = self.ctx();
            kc.write(At::new(BASE, port.into()), 1, u32::from(v), &mut ctx);
        }

        /// The guest polls the keyboard controller once and reads a byte if there is one.
        fn guest_poll_keyboard(&mut self) -> Option<u8> {
            let (mut ctx, kc, _) = self.ctx();
            if kc.read(At::new(BASE, PORT_CMD.into()), 1, &mut ctx) as u8 & STS_OBF == 0 {
                return None;
            }
            let b = kc.read(At::new(BASE, PORT_DATA.into()), 1, &mut ctx) as u8;
            self.kbd_seen.push(b);
            Some(b)
        }

        /// The guest polls the UART once and reads a byte if there is one.
        fn guest_poll_serial(&mut self) {
            let (mut ctx, _, uart) = self.ctx();
            if uart.read(At::new(0x3F8, REG_LSR.into()), 1, &mut ctx) as u8 & 0x01 != 0 {
                let b = uart.read(At::new(0x3F8, REG_DATA.into()), 1, &mut ctx) as u8;
                self.serial_seen.push(b);
            }
        }
    }

    impl InputSink for Rig {
        fn keyboard_accepts(&mut self, first: KeyEvent) -> bool {
            keyboard_accepts(&self.kc, self.now, first)
        }
        fn key_event(&mut self, (make, pressed): KeyEvent) {
            let (mut ctx, kc, _) = self.ctx();
            kc.key_event(make, pressed, &mut ctx);
        }
        fn serial_byte(&mut self, byte: u8) -> bool {
            let (mut ctx, _, uart) = self.ctx();
            if !uart.can_receive() {
                return false;
            }
            uart.receive_byte(byte, &mut ctx);
            true
        }
    }

    /// The set-1 bytes (translation on) a guest should read for `events`, in order.
    fn expected_set1(events: &[KeyEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(make, pressed) in events {
            let set2 = if pressed {
                make.to_vec()
            } else {
                set2_break(make)
            };
            out.extend(crate::keymap::tests::set1(&set2));
        }
        out
    }

    /// Run the rig: the host pumps every `pump_every` ns, the guest polls every `poll_every`
    /// ns (reading at most one byte per poll), until `until` ns.
    fn run(rig: &mut Rig, input: &mut HostInput, poll_every: Nanos, until: Nanos) {
        let step = 10_000;
        let mut next_poll = 0;
        while rig.now < until {
            input.pump(rig);
            if rig.now >= next_poll {
                rig.guest_poll_keyboard();
                rig.guest_poll_serial();
                next_poll = rig.now + poll_every;
            }
            rig.now += step;
        }
    }

    const TEXT: &str = "echo $((6*7)) | tr 4 X; ls -l /dev/ttyS0 && cat <<EOF\n\
                        The Quick Brown Fox ~!@#%^&*()_+{}|:\"<>?`-=[]\\;',./\tA\r\nZ\x03";

    fn text_events(text: &str) -> Vec<KeyEvent> {
        let mut input = HostInput::default();
        assert_eq!(input.type_text(text), 0);
        input.keys.iter().flatten().copied().collect()
    }

    #[test]
    fn typed_text_reaches_a_fast_guest_completely_and_in_order() {
        let mut rig = Rig::new();
        let mut input = HostInput::default();
        assert_eq!(input.type_text(TEXT), 0);
        let want = expected_set1(&text_events(TEXT));
        run(&mut rig, &mut input, 20_000, 1_000_000_000);
        assert!(!input.busy());
        assert_eq!(rig.kbd_seen, want);
        assert!(!rig.kbd_seen.contains(&0xFF), "no overrun code");
    }

    #[test]
    fn a_slow_guest_loses_nothing_and_sees_no_auto_repeat() {
        // The guest reads one byte every 600 ms, longer than the typematic delay (500 ms): a
        // key pressed in one batch and released in the next would repeat.
        let mut rig = Rig::new();
        let mut input = HostInput::default();
        let text = "Hi!\n";
        input.type_text(text);
        let want = expected_set1(&text_events(text));
        run(
            &mut rig,
            &mut input,
            600_000_000,
            600_000_000 * (want.len() as u64 + 2),
        );
        assert_eq!(rig.kbd_seen, want);
    }

    #[test]
    fn without_pacing_the_same_text_overruns_the_keyboard() {
        // What the pacing prevents: all events at once overflow the 16-byte buffer.
        let mut rig = Rig::new();
        for e in text_events(TEXT) {
            rig.key_event(e);
        }
        while rig.now < 1_000_000_000 {
            rig.guest_poll_keyboard();
            rig.now += 200_000;
        }
        assert_ne!(rig.kbd_seen, expected_set1(&text_events(TEXT)));
        assert!(rig.kbd_seen.contains(&0xFF), "overrun code");
    }

    #[test]
    fn keys_wait_while_the_guest_has_the_keyboard_disabled() {
        let mut rig = Rig::new();
        rig.kc_write(PORT_CMD, CMD_KBD_DISABLE);
        let mut input = HostInput::default();
        assert!(input.key("KeyA", true));
        assert!(input.key("KeyA", false));
        run(&mut rig, &mut input, 20_000, 50_000_000);
        assert!(rig.kbd_seen.is_empty());
        assert!(input.keys_pending(), "held, not dropped");
        rig.kc_write(PORT_CMD, CMD_KBD_ENABLE);
        let t = rig.now;
        run(&mut rig, &mut input, 20_000, t + 50_000_000);
        assert_eq!(rig.kbd_seen, [0x1E, 0x9E]);
    }

    #[test]
    fn keys_wait_while_scanning_is_off_and_behind_command_replies() {
        let mut rig = Rig::new();
        // The guest disables scanning (F5): the keyboard answers ACK and would drop keys.
        rig.kc_write(PORT_DATA, 0xF5);
        let mut input = HostInput::default();
        input.type_text("x");
        run(&mut rig, &mut input, 20_000, 50_000_000);
        assert_eq!(rig.kbd_seen, [ps2::ACK], "only the ACK; the key waits");
        assert!(input.keys_pending());
        // Scanning on again (F4, ACK); then the key comes, after the ACK.
        rig.kc_write(PORT_DATA, 0xF4);
        let t = rig.now;
        run(&mut rig, &mut input, 20_000, t + 50_000_000);
        assert_eq!(rig.kbd_seen, [ps2::ACK, ps2::ACK, 0x2D, 0xAD]);
    }

    #[test]
    fn keyboard_accepts_only_with_nothing_waiting() {
        let mut rig = Rig::new();
        let a: KeyEvent = (keymap::scancode("KeyA").unwrap(), true);
        assert!(keyboard_accepts(&rig.kc, rig.now, a));
        rig.key_event(a);
        assert!(!keyboard_accepts(&rig.kc, rig.now, a), "byte unread");
        assert_eq!(rig.guest_poll_keyboard(), Some(0x1E));
        // Read, and nothing follows it: free again (the probe looks past the refill delay).
        assert!(keyboard_accepts(&rig.kc, rig.now, a));
        // A two-byte key: after the first byte is read the second is still to come.
        rig.key_event((keymap::scancode("ArrowUp").unwrap(), true));
        rig.now += ps2::REFILL_DELAY;
        assert_eq!(rig.guest_poll_keyboard(), Some(0xE0));
        assert!(!keyboard_accepts(&rig.kc, rig.now, a));
        rig.now += ps2::REFILL_DELAY;
        assert_eq!(rig.guest_poll_keyboard(), Some(0x48));
        assert!(keyboard_accepts(&rig.kc, rig.now, a));
        // Mouse bytes waiting count too (the guest enabled the mouse's reporting).
        rig.kc_write(PORT_CMD, ps2::CMD_WRITE_AUX);
        rig.kc_write(PORT_DATA, 0xF4);
        assert!(!keyboard_accepts(&rig.kc, rig.now, a), "mouse ACK waiting");
    }

    #[test]
    fn serial_bytes_are_fed_as_the_uart_takes_them() {
        let mut rig = Rig::new();
        let mut input = HostInput::default();
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        {
            // The guest selects 8-bit characters (the reset value is 5 bits).
            let (mut ctx, _, uart) = rig.ctx();
            uart.write(At::new(0x3F8, REG_LCR.into()), 1, 0x03, &mut ctx);
        }
        // Without the FIFO the receiver holds one byte.
        assert_eq!(input.send_serial(&data), 0);
        run(&mut rig, &mut input, 50_000, 3000 * 50_000 + 1_000_000);
        assert!(!input.busy());
        assert!(
            rig.serial_seen == data,
            "{} of {} bytes",
            rig.serial_seen.len(),
            data.len()
        );
        // With the FIFO enabled, 16 at a time; still nothing lost.
        rig.serial_seen.clear();
        {
            let (mut ctx, _, uart) = rig.ctx();
            uart.write(At::new(0x3F8, REG_IIR_FCR.into()), 1, 0x01, &mut ctx);
        }
        input.send_serial(&data);
        let t = rig.now;
        run(&mut rig, &mut input, 50_000, t + 3000 * 50_000 + 1_000_000);
        assert!(
            rig.serial_seen == data,
            "{} of {} bytes",
            rig.serial_seen.len(),
            data.len()
        );
    }

    #[test]
    fn batches_fit_the_keyboard_buffer() {
        // Every key and every character's batch is at most 8 bytes (16 fit).
        for c in (0u8..0x80).map(char::from) {
            if let Some(s) = keymap::stroke_for(c) {
                let n: usize = s
                    .events()
                    .iter()
                    .map(|&(m, p)| if p { m.len() } else { set2_break(m).len() })
                    .sum();
                assert!(n <= 8, "{c:?}: {n} bytes");
            }
        }
    }

    #[test]
    fn unknown_keys_and_characters_are_refused_and_pause_release_is_nothing() {
        let mut input = HostInput::default();
        assert!(!input.key("Fn", true));
        assert!(input.key("Pause", false));
        assert!(!input.busy());
        assert_eq!(input.type_text("añb€"), 2);
        assert_eq!(input.keys.len(), 2);
        assert_eq!(input.type_text("\r\n\n"), 0);
        assert_eq!(
            input.keys.len(),
            4,
            "CR LF is one Enter, the lone LF another"
        );
    }

    #[test]
    fn queues_are_bounded() {
        let mut input = HostInput::default();
        let big = "a".repeat(MAX_KEY_BATCHES + 10);
        assert_eq!(input.type_text(&big), 10);
        assert_eq!(input.send_serial(&vec![0; MAX_SERIAL_BYTES + 5]), 5);
        input.clear();
        assert!(!input.busy());
    }

    /// The machine as a sink: a real-mode guest polls port 0x64 and stores what it reads from
    /// port 0x60 (translation on, as the board starts) until it has 6 bytes, then halts.
    #[test]
    fn a_guest_program_reads_typed_text_through_the_machine() {
        use crate::cpu::{SegCache, Segment};
        use crate::machine::{MachineConfig, Stop};
        let mut m = Machine::new(MachineConfig {
            ram_bytes: 1 << 20,
            ..MachineConfig::default()
        });
        #[rustfmt::skip]
        let code = [
            0xBF, 0x00, 0x20,       // mov di, 0x2000
            0xE4, 0x64,             // l: in al, 0x64
            0xA8, 0x01,             // test al, 1
            0x74, 0xFA,             // jz l
            0xE4, 0x60,             // in al, 0x60
            0xAA,                   // stosb
            0x81, 0xFF, 0x06, 0x20, // cmp di, 0x2006
            0x75, 0xF1,             // jne l
            0xFA, 0xF4,             // cli ; hlt
        ];
        m.cpu.mem.load(0x1000, &code);
        m.cpu.segs[Segment::CS as usize] = SegCache::real(0);
        m.cpu.eip = 0x1000;
        let mut input = HostInput::default();
        input.type_text("Ab");
        let mut stop = Stop::Budget;
        for _ in 0..1000 {
            input.pump(&mut m);
            stop = m.run(5_000);
            if stop != Stop::Budget {
                break;
            }
        }
        assert!(matches!(stop, Stop::Idle { .. }), "{stop:?}");
        assert!(!input.busy());
        // Shift down, A down, A up, Shift up, B down, B up (set 1).
        assert_eq!(
            &m.cpu.mem.ram[0x2000..0x2006],
            [0x2A, 0x1E, 0x9E, 0xAA, 0x30, 0xB0]
        );
    }
}
