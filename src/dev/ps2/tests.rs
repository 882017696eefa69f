//! The i8042, keyboard and mouse, driven through their ports as a guest does.

use super::*;
use crate::dev::{At, Device, Timed};

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
    r.with(|d, ctx| d.mouse_move(5, -3, 1, 1, ctx));
    assert!(r.irq.get(12));
    assert_eq!(r.read_all(), [0x09, 5, 3, 1]);
    // Left 300 (overflow), down 2: X sign+overflow, Y sign.
    r.with(|d, ctx| d.mouse_move(-300, 2, 0, 0, ctx));
    assert_eq!(r.read_all(), [0x08 | 0x10 | 0x40 | 0x20, 0x00, 0xFE, 0x00]);
    // Remote mode: packets only on request.
    send(&mut r, 0xF0);
    assert_eq!(r.read_all(), [ACK]);
    r.with(|d, ctx| d.mouse_move(1, 0, 0, 2, ctx));
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
        let (dev, mut ctx) = r.ctx();
        if x & 0x100 != 0 {
            dev.write(At::new(BASE, off), size, v as u32, &mut ctx);
        } else {
            dev.read(At::new(BASE, off), size, &mut ctx);
        }
        if x & 0x7000 == 0 {
            dev.key_event(&[v, v], x & 1 != 0, &mut ctx);
            dev.mouse_move(v as i32 * 50, -(v as i32), 3, v, &mut ctx);
        }
        r.now += 1000;
        r.board.reset = false;
    }
    // The state round-trips through serde.
    let json = serde_json::to_string(&r.dev).unwrap();
    let back: I8042 = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
}
