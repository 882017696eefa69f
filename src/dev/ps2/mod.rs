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

//!
//! The files: the controller ([`I8042`], `i8042.rs`), the keyboard (`keyboard.rs`) and the mouse
//! (`mouse.rs`); the controller's ports, status and command bits and the devices' replies are
//! here.

mod i8042;
mod keyboard;
mod mouse;
#[cfg(test)]
mod tests;

pub use i8042::*;
pub use keyboard::*;
pub use mouse::*;

use super::Nanos;

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
