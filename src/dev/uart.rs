//! 16550A UART (National Semiconductor PC16550D data sheet), as on COM1 (0x3F8, IRQ 4) and
//! COM2 (0x2F8, IRQ 3).
//!
//! # Wiring for the board
//!
//! `bus.map(0x3F8, 8, COM1)` to `Uart::new(4)` and `bus.map(0x2F8, 8, COM2)` to `Uart::new(3)`.
//! After each access or advance, hand `irq.levels()` to the PIC and re-read `next_deadline()`.
//! The host drains [`Uart::take_output`] (or [`Uart::drain_output`]) and feeds input with
//! [`Uart::receive_byte`] while [`Uart::can_receive`] is true; [`Uart::set_fast`] skips the
//! baud-rate delay on transmit.
//!
//! Timing is virtual: a character spends one character time (start + data + parity + stop
//! bits at the programmed baud rate) in the transmitter shift register before the host sees it,
//! and the receiver's character-timeout interrupt fires after four character times without
//! FIFO activity. In "fast" mode the host receives transmitted characters at once.
//!
//! On a PC the UART's interrupt output reaches the PIC only while MCR OUT2 is set, and in
//! loopback mode OUT2 is forced inactive (data sheet: the modem control outputs are forced to
//! their inactive levels), so a UART in loopback never raises its IRQ line.

use super::{At, DevCtx, Device, Nanos, Timed};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

// Register offsets from the base port.
/// Receiver buffer (read) / transmitter holding register (write); divisor latch low when DLAB.
pub const REG_DATA: u16 = 0;
/// Interrupt enable register; divisor latch high when DLAB.
pub const REG_IER: u16 = 1;
/// Interrupt identification (read) / FIFO control (write).
pub const REG_IIR_FCR: u16 = 2;
/// Line control register.
pub const REG_LCR: u16 = 3;
/// Modem control register.
pub const REG_MCR: u16 = 4;
/// Line status register.
pub const REG_LSR: u16 = 5;
/// Modem status register.
pub const REG_MSR: u16 = 6;
/// Scratch register.
pub const REG_SCR: u16 = 7;

// IER bits.
/// Enable received-data-available (and character timeout) interrupt.
pub const IER_ERBFI: u8 = 0x01;
/// Enable transmitter-holding-register-empty interrupt.
pub const IER_ETBEI: u8 = 0x02;
/// Enable receiver line status interrupt.
pub const IER_ELSI: u8 = 0x04;
/// Enable modem status interrupt.
pub const IER_EDSSI: u8 = 0x08;
/// The IER bits a 16550A implements (the upper four read as zero).
pub const IER_MASK: u8 = 0x0F;

// IIR values.
/// No interrupt pending.
pub const IIR_NO_INT: u8 = 0x01;
/// Modem status change (lowest priority).
pub const IIR_MSI: u8 = 0x00;
/// Transmitter holding register empty.
pub const IIR_THRI: u8 = 0x02;
/// Received data available (trigger level reached).
pub const IIR_RDI: u8 = 0x04;
/// Receiver line status (highest priority).
pub const IIR_RLSI: u8 = 0x06;
/// Character timeout.
pub const IIR_TIMEOUT: u8 = 0x0C;
/// Both "FIFOs enabled" bits, set in IIR when FCR bit 0 is set.
pub const IIR_FIFO_ENABLED: u8 = 0xC0;

// FCR bits.
/// Enable the RX and TX FIFOs.
pub const FCR_ENABLE: u8 = 0x01;
/// Clear the receive FIFO (self-clearing).
pub const FCR_CLEAR_RX: u8 = 0x02;
/// Clear the transmit FIFO (self-clearing).
pub const FCR_CLEAR_TX: u8 = 0x04;
/// RX trigger level field (00 = 1, 01 = 4, 10 = 8, 11 = 14 bytes).
pub const FCR_TRIGGER_MASK: u8 = 0xC0;

// LCR bits.
/// Word length field (00 = 5 ... 11 = 8 data bits).
pub const LCR_WLEN_MASK: u8 = 0x03;
/// Two stop bits (1.5 with 5-bit words).
pub const LCR_STOP: u8 = 0x04;
/// Parity enable.
pub const LCR_PARITY: u8 = 0x08;
/// Set break: the transmitter output is held at spacing.
pub const LCR_BREAK: u8 = 0x40;
/// Divisor latch access bit: offsets 0 and 1 reach the divisor latch.
pub const LCR_DLAB: u8 = 0x80;

// MCR bits.
/// Data terminal ready.
pub const MCR_DTR: u8 = 0x01;
/// Request to send.
pub const MCR_RTS: u8 = 0x02;
/// User output 1.
pub const MCR_OUT1: u8 = 0x04;
/// User output 2: gates the IRQ line on PCs.
pub const MCR_OUT2: u8 = 0x08;
/// Local loopback.
pub const MCR_LOOP: u8 = 0x10;
/// The MCR bits a 16550A implements.
pub const MCR_MASK: u8 = 0x1F;

// LSR bits.
/// Data ready: at least one character is in the receiver.
pub const LSR_DR: u8 = 0x01;
/// Overrun error.
pub const LSR_OE: u8 = 0x02;
/// Parity error.
pub const LSR_PE: u8 = 0x04;
/// Framing error.
pub const LSR_FE: u8 = 0x08;
/// Break interrupt.
pub const LSR_BI: u8 = 0x10;
/// Transmitter holding register (or TX FIFO) empty.
pub const LSR_THRE: u8 = 0x20;
/// Transmitter empty: THR/FIFO and shift register both empty.
pub const LSR_TEMT: u8 = 0x40;
/// At least one parity/framing/break error in the RX FIFO.
pub const LSR_FIFO_ERR: u8 = 0x80;
/// The error bits that raise a receiver line status interrupt.
pub const LSR_ERRORS: u8 = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

// MSR bits.
/// Delta clear to send.
pub const MSR_DCTS: u8 = 0x01;
/// Delta data set ready.
pub const MSR_DDSR: u8 = 0x02;
/// Trailing edge ring indicator (RI went from on to off).
pub const MSR_TERI: u8 = 0x04;
/// Delta data carrier detect.
pub const MSR_DDCD: u8 = 0x08;
/// Clear to send.
pub const MSR_CTS: u8 = 0x10;
/// Data set ready.
pub const MSR_DSR: u8 = 0x20;
/// Ring indicator.
pub const MSR_RI: u8 = 0x40;
/// Data carrier detect.
pub const MSR_DCD: u8 = 0x80;
/// The four delta bits.
pub const MSR_DELTAS: u8 = 0x0F;

/// FIFO depth of the 16550A.
pub const FIFO_SIZE: usize = 16;
/// The UART's input clock (1.8432 MHz), divided by 16 × divisor for the baud rate.
pub const CLOCK_HZ: u64 = 1_843_200;

/// One 16550A UART.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Uart {
    /// ISA IRQ line this UART drives.
    pub irq: u8,
    /// Interrupt enable register (low 4 bits).
    ier: u8,
    /// Line control register.
    lcr: u8,
    /// Modem control register (low 5 bits).
    mcr: u8,
    /// Scratch register.
    scr: u8,
    /// Divisor latch (DLM:DLL).
    divisor: u16,
    /// FIFOs enabled (FCR bit 0).
    fifo_enabled: bool,
    /// RX trigger level in bytes (1, 4, 8 or 14).
    rx_trigger: usize,
    /// Receive FIFO: (character, its PE/FE/BI error bits).
    rx: VecDeque<(u8, u8)>,
    /// Sticky LSR error bits (OE, and PE/FE/BI of the character at the FIFO head).
    lsr_errors: u8,
    /// Transmit FIFO (holds at most one byte, the THR, when FIFOs are disabled).
    tx: VecDeque<u8>,
    /// The character in the transmitter shift register and when it has been sent.
    tsr: Option<(u8, Nanos)>,
    /// THRE interrupt pending (set when THR becomes empty; cleared by IIR read or THR write).
    thre_pending: bool,
    /// Character timeout interrupt pending.
    timeout_pending: bool,
    /// When the character timeout fires if nothing happens before.
    timeout_at: Option<Nanos>,
    /// MSR: status bits (high nibble) and delta bits (low nibble).
    msr: u8,
    /// Modem inputs from the outside world (MSR status bits when not in loopback).
    modem_inputs: u8,
    /// Transmit at once instead of at the baud rate.
    fast: bool,
    /// Characters transmitted and not yet taken by the host.
    output: Vec<u8>,
}

impl Uart {
    /// A UART in its reset state driving ISA line `irq`. The modem inputs read as CTS, DSR and
    /// DCD asserted (a connected terminal).
    pub fn new(irq: u8) -> Self {
        let inputs = MSR_CTS | MSR_DSR | MSR_DCD;
        Uart {
            irq,
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            divisor: 12, // 9600 baud, a common firmware default
            fifo_enabled: false,
            rx_trigger: 1,
            rx: VecDeque::new(),
            lsr_errors: 0,
            tx: VecDeque::new(),
            tsr: None,
            thre_pending: false,
            timeout_pending: false,
            timeout_at: None,
            msr: inputs,
            modem_inputs: inputs,
            fast: false,
            output: Vec::new(),
        }
    }

    // ---- host API ----

    /// Choose "fast" transmission: characters reach the host as soon as the guest writes them.
    pub fn set_fast(&mut self, fast: bool) {
        self.fast = fast;
    }

    /// The characters transmitted and not taken yet.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Take the characters transmitted so far.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Move transmitted characters into `buf`; returns how many were moved.
    pub fn drain_output(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.output.len());
        buf[..n].copy_from_slice(&self.output[..n]);
        self.output.drain(..n);
        n
    }

    /// Whether the receiver has room for another character from the host. False in loopback
    /// mode, where the receiver is disconnected from the outside.
    pub fn can_receive(&self) -> bool {
        self.mcr & MCR_LOOP == 0 && self.rx.len() < self.rx_capacity()
    }

    /// A character arrives on the serial line. If the receiver is full it is lost and the
    /// overrun bit is set. Ignored in loopback mode.
    pub fn receive_byte(&mut self, b: u8, ctx: &mut DevCtx) {
        if self.mcr & MCR_LOOP == 0 {
            self.rx_push(b, 0, ctx.now);
        }
        self.update_irq(ctx);
    }

    /// A break condition arrives on the serial line (a zero character with BI and FE).
    pub fn receive_break(&mut self, ctx: &mut DevCtx) {
        if self.mcr & MCR_LOOP == 0 {
            self.rx_push(0, LSR_BI | LSR_FE, ctx.now);
        }
        self.update_irq(ctx);
    }

    /// Set the modem status inputs (the MSR_CTS/DSR/RI/DCD bits); delta bits follow.
    pub fn set_modem_inputs(&mut self, inputs: u8, ctx: &mut DevCtx) {
        self.modem_inputs = inputs & 0xF0;
        self.update_msr();
        self.update_irq(ctx);
    }

    /// Whether the UART's interrupt output is asserted (before the OUT2 gate).
    pub fn interrupt_pending(&self) -> bool {
        self.iir_source() != IIR_NO_INT
    }

    /// The programmed baud rate.
    pub fn baud(&self) -> u64 {
        CLOCK_HZ / (16 * self.divisor_value())
    }

    // ---- internals ----

    fn divisor_value(&self) -> u64 {
        // A divisor of zero is not a valid setting; treat it as the slowest rate.
        if self.divisor == 0 {
            65536
        } else {
            self.divisor as u64
        }
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled {
            FIFO_SIZE
        } else {
            1
        }
    }

    fn tx_capacity(&self) -> usize {
        self.rx_capacity()
    }

    fn data_mask(&self) -> u8 {
        0xFF >> (3 - (self.lcr & LCR_WLEN_MASK))
    }

    /// Time on the line for one character: start bit, data bits, parity, stop bits.
    pub fn char_time(&self) -> Nanos {
        let data = 5 + (self.lcr & LCR_WLEN_MASK) as u64;
        let parity = (self.lcr & LCR_PARITY != 0) as u64;
        let stop = if self.lcr & LCR_STOP != 0 { 2 } else { 1 };
        let bits = 1 + data + parity + stop;
        bits * 16 * self.divisor_value() * 1_000_000_000 / CLOCK_HZ
    }

    fn rx_push(&mut self, b: u8, errors: u8, now: Nanos) {
        if self.rx.len() >= self.rx_capacity() {
            if self.fifo_enabled {
                // The character in the shift register is overwritten; the FIFO keeps its data.
                self.lsr_errors |= LSR_OE;
            } else {
                // The new character overwrites the unread one in RBR.
                self.lsr_errors |= LSR_OE;
                self.rx.clear();
                self.rx.push_back((b & self.data_mask(), errors));
                self.lsr_errors |= errors;
            }
        } else {
            if self.rx.is_empty() {
                self.lsr_errors |= errors;
            }
            self.rx.push_back((b & self.data_mask(), errors));
        }
        self.restart_timeout(now);
    }

    fn restart_timeout(&mut self, now: Nanos) {
        self.timeout_at = if self.fifo_enabled && !self.rx.is_empty() {
            Some(now.saturating_add(4 * self.char_time()))
        } else {
            None
        };
    }

    fn read_rbr(&mut self, now: Nanos) -> u8 {
        let b = match self.rx.pop_front() {
            Some((b, _)) => b,
            None => 0,
        };
        if let Some(&(_, err)) = self.rx.front() {
            self.lsr_errors |= err;
        }
        self.timeout_pending = false;
        self.restart_timeout(now);
        b
    }

    fn lsr(&self) -> u8 {
        let mut lsr = self.lsr_errors;
        if !self.rx.is_empty() {
            lsr |= LSR_DR;
        }
        if self.tx.is_empty() {
            lsr |= LSR_THRE;
            if self.tsr.is_none() {
                lsr |= LSR_TEMT;
            }
        }
        if self.fifo_enabled && self.rx.iter().any(|&(_, e)| e != 0) {
            lsr |= LSR_FIFO_ERR;
        }
        lsr
    }

    /// The highest-priority pending interrupt, as IIR bits 0-3.
    fn iir_source(&self) -> u8 {
        let rx_ready = if self.fifo_enabled {
            self.rx.len() >= self.rx_trigger
        } else {
            !self.rx.is_empty()
        };
        if self.ier & IER_ELSI != 0 && self.lsr_errors & LSR_ERRORS != 0 {
            IIR_RLSI
        } else if self.ier & IER_ERBFI != 0 && rx_ready {
            IIR_RDI
        } else if self.ier & IER_ERBFI != 0 && self.timeout_pending && !self.rx.is_empty() {
            IIR_TIMEOUT
        } else if self.ier & IER_ETBEI != 0 && self.thre_pending {
            IIR_THRI
        } else if self.ier & IER_EDSSI != 0 && self.msr & MSR_DELTAS != 0 {
            IIR_MSI
        } else {
            IIR_NO_INT
        }
    }

    fn update_irq(&self, ctx: &mut DevCtx) {
        let gate = self.mcr & MCR_OUT2 != 0 && self.mcr & MCR_LOOP == 0;
        ctx.irq.set(self.irq, gate && self.interrupt_pending());
    }

    /// Recompute MSR status bits from the inputs (or from MCR in loopback) and latch deltas.
    fn update_msr(&mut self) {
        let new = if self.mcr & MCR_LOOP != 0 {
            let mut s = 0;
            if self.mcr & MCR_RTS != 0 {
                s |= MSR_CTS;
            }
            if self.mcr & MCR_DTR != 0 {
                s |= MSR_DSR;
            }
            if self.mcr & MCR_OUT1 != 0 {
                s |= MSR_RI;
            }
            if self.mcr & MCR_OUT2 != 0 {
                s |= MSR_DCD;
            }
            s
        } else {
            self.modem_inputs
        };
        let old = self.msr & 0xF0;
        let changed = old ^ new;
        let mut delta = self.msr & MSR_DELTAS;
        if changed & MSR_CTS != 0 {
            delta |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            delta |= MSR_DDSR;
        }
        if old & MSR_RI != 0 && new & MSR_RI == 0 {
            delta |= MSR_TERI;
        }
        if changed & MSR_DCD != 0 {
            delta |= MSR_DDCD;
        }
        self.msr = new | delta;
    }

    /// A character leaves the transmitter: to the host, or back to the receiver in loopback.
    fn emit(&mut self, b: u8, now: Nanos) {
        let b = b & self.data_mask();
        if self.mcr & MCR_LOOP != 0 {
            self.rx_push(b, 0, now);
        } else {
            self.output.push(b);
        }
    }

    /// The THR (or TX FIFO) just became empty.
    fn thr_emptied(&mut self) {
        self.thre_pending = true;
    }

    /// Move the next character from THR/FIFO into the idle shift register at time `start`.
    fn load_tsr(&mut self, start: Nanos) {
        if self.tsr.is_none() {
            if let Some(b) = self.tx.pop_front() {
                self.tsr = Some((b, start.saturating_add(self.char_time())));
                if self.tx.is_empty() {
                    self.thr_emptied();
                }
            }
        }
    }

    fn write_thr(&mut self, value: u8, now: Nanos) {
        self.thre_pending = false;
        if self.fast {
            self.emit(value, now);
            self.thr_emptied();
            return;
        }
        if self.tx.len() < self.tx_capacity() {
            self.tx.push_back(value);
        } else if let Some(last) = self.tx.back_mut() {
            // Writing a full THR/FIFO overwrites the newest character.
            *last = value;
        }
        self.load_tsr(now);
    }

    /// Run the transmitter and the receive timeout up to `now`.
    fn run_until(&mut self, now: Nanos) {
        while let Some((b, done)) = self.tsr {
            if done > now {
                break;
            }
            self.tsr = None;
            self.emit(b, done);
            self.load_tsr(done);
        }
        if let Some(t) = self.timeout_at {
            if t <= now {
                self.timeout_at = None;
                if self.fifo_enabled && !self.rx.is_empty() {
                    self.timeout_pending = true;
                }
            }
        }
    }

    fn write_fcr(&mut self, value: u8) {
        let enable = value & FCR_ENABLE != 0;
        if enable != self.fifo_enabled {
            // Changing the FIFO mode clears both FIFOs.
            self.rx.clear();
            self.tx.clear();
            self.fifo_enabled = enable;
            self.timeout_pending = false;
            self.timeout_at = None;
        }
        if !enable {
            self.rx_trigger = 1;
            return;
        }
        if value & FCR_CLEAR_RX != 0 {
            self.rx.clear();
            self.timeout_pending = false;
            self.timeout_at = None;
        }
        if value & FCR_CLEAR_TX != 0 && !self.tx.is_empty() {
            self.tx.clear();
            self.thr_emptied();
        }
        self.rx_trigger = match value & FCR_TRIGGER_MASK {
            0x00 => 1,
            0x40 => 4,
            0x80 => 8,
            _ => 14,
        };
    }

    fn read_byte(&mut self, offset: u16, now: Nanos) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            // Guest reads the divisor latch low byte.
            REG_DATA if dlab => self.divisor as u8,
            // Guest reads a received character.
            REG_DATA => self.read_rbr(now),
            // Guest reads the divisor latch high byte.
            REG_IER if dlab => (self.divisor >> 8) as u8,
            // Guest reads which interrupts it enabled.
            REG_IER => self.ier,
            // Guest identifies the pending interrupt; reading acknowledges a THRE interrupt.
            REG_IIR_FCR => {
                let src = self.iir_source();
                if src == IIR_THRI {
                    self.thre_pending = false;
                }
                src | if self.fifo_enabled {
                    IIR_FIFO_ENABLED
                } else {
                    0
                }
            }
            // Guest reads the line format.
            REG_LCR => self.lcr,
            // Guest reads the modem control outputs.
            REG_MCR => self.mcr,
            // Guest polls line status; reading clears the error bits.
            REG_LSR => {
                let lsr = self.lsr();
                self.lsr_errors = 0;
                lsr
            }
            // Guest reads modem status; reading clears the delta bits.
            REG_MSR => {
                let msr = self.msr;
                self.msr &= !MSR_DELTAS;
                msr
            }
            // Guest reads the scratch register.
            REG_SCR => self.scr,
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, offset: u16, value: u8, now: Nanos) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            // Guest sets the divisor latch low byte (baud rate).
            REG_DATA if dlab => self.divisor = (self.divisor & 0xFF00) | value as u16,
            // Guest sends a character.
            REG_DATA => self.write_thr(value, now),
            // Guest sets the divisor latch high byte.
            REG_IER if dlab => self.divisor = (self.divisor & 0x00FF) | (value as u16) << 8,
            // Guest enables or disables interrupt sources.
            REG_IER => {
                let old = self.ier;
                self.ier = value & IER_MASK;
                if self.ier & IER_ETBEI == 0 {
                    self.thre_pending = false;
                } else if old & IER_ETBEI == 0 && self.tx.is_empty() {
                    // Enabling ETBEI while THR is empty raises the THRE interrupt.
                    self.thre_pending = true;
                }
            }
            // Guest controls the FIFOs.
            REG_IIR_FCR => self.write_fcr(value),
            // Guest sets the line format, DLAB or break.
            REG_LCR => self.lcr = value,
            // Guest sets the modem control outputs or loopback.
            REG_MCR => {
                self.mcr = value & MCR_MASK;
                self.update_msr();
            }
            // Writes to LSR and MSR are for factory testing only; ignored.
            REG_LSR | REG_MSR => {}
            // Guest stores a byte in the scratch register.
            REG_SCR => self.scr = value,
            _ => {}
        }
    }
}

impl Device for Uart {
    fn read(&mut self, at: At, size: u8, ctx: &mut DevCtx) -> u32 {
        let offset = at.offset as u16;
        self.run_until(ctx.now);
        // Wider accesses are split into byte accesses, as the ISA bus does.
        let mut v = 0u32;
        for i in 0..size.min(4) as u16 {
            let off = offset.wrapping_add(i);
            let b = if off < 8 {
                self.read_byte(off, ctx.now)
            } else {
                0xFF
            };
            v |= (b as u32) << (8 * i);
        }
        self.update_irq(ctx);
        v
    }

    fn write(&mut self, at: At, size: u8, value: u32, ctx: &mut DevCtx) {
        let offset = at.offset as u16;
        self.run_until(ctx.now);
        for i in 0..size.min(4) as u16 {
            let off = offset.wrapping_add(i);
            if off < 8 {
                self.write_byte(off, (value >> (8 * i)) as u8, ctx.now);
            }
        }
        self.update_irq(ctx);
    }
}

impl Timed for Uart {
    fn next_deadline(&self) -> Option<Nanos> {
        let tx = self.tsr.map(|(_, t)| t);
        let rx = if self.timeout_pending {
            None
        } else {
            self.timeout_at
        };
        match (tx, rx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn advance(&mut self, ctx: &mut DevCtx) {
        self.run_until(ctx.now);
        self.update_irq(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UART on COM1 with the machine state a test drives it through.
    type Rig = crate::dev::testing::Rig<Uart>;

    fn rig() -> Rig {
        Rig::new(Uart::new(4), 0x3F8)
    }

    impl Rig {
        fn receive(&mut self, b: u8) {
            let (uart, mut ctx) = self.ctx();
            uart.receive_byte(b, &mut ctx);
        }
        fn irq(&self) -> bool {
            self.irq.get(4)
        }
        /// 115200 8N1, as Linux's console= sets it up.
        fn setup_115200(&mut self) {
            self.outb(REG_LCR, LCR_DLAB | 0x03);
            self.outb(REG_DATA, 1);
            self.outb(REG_IER, 0);
            self.outb(REG_LCR, 0x03);
        }
    }

    #[test]
    fn linux_autoconfig_probe_detects_16550a() {
        let mut r = rig();
        // IER existence test.
        let saved = r.inb(REG_IER);
        r.outb(REG_IER, 0);
        assert_eq!(r.inb(REG_IER) & 0x0F, 0);
        r.outb(REG_IER, 0x0F);
        assert_eq!(r.inb(REG_IER) & 0x0F, 0x0F);
        r.outb(REG_IER, saved);
        // Scratch register.
        r.outb(REG_SCR, 0xA5);
        assert_eq!(r.inb(REG_SCR), 0xA5);
        r.outb(REG_SCR, 0x5A);
        assert_eq!(r.inb(REG_SCR), 0x5A);
        // Loopback test: RTS|OUT2 in loop mode show as CTS|DCD.
        let save_mcr = r.inb(REG_MCR);
        r.outb(REG_MCR, MCR_LOOP | 0x0A);
        assert_eq!(r.inb(REG_MSR) & 0xF0, MSR_DCD | MSR_CTS);
        r.outb(REG_MCR, save_mcr);
        // FIFO detection: IIR bits 7:6 = 3 means a 16550A.
        r.outb(REG_IIR_FCR, FCR_ENABLE);
        assert_eq!(r.inb(REG_IIR_FCR) >> 6, 3);
        assert_eq!(r.inb(REG_IIR_FCR), 0xC1);
        // No EFR under LCR=0xBF (reads IIR), no 64-byte FIFO bit 5 (not a 16750).
        r.outb(REG_LCR, 0xBF);
        assert_ne!(r.inb(REG_IIR_FCR), 0);
        r.outb(REG_LCR, 0);
        r.outb(REG_IIR_FCR, FCR_ENABLE | 0x20);
        assert_eq!(r.inb(REG_IIR_FCR) >> 5, 6);
        // IER bit 6 (XScale UUE) does not stick.
        r.outb(REG_IER, 0x40);
        assert_eq!(r.inb(REG_IER) & 0x40, 0);
        // Divisor latch round trip under DLAB.
        r.outb(REG_LCR, LCR_DLAB | 3);
        r.outb(REG_DATA, 0x34);
        r.outb(REG_IER, 0x12);
        assert_eq!((r.inb(REG_DATA), r.inb(REG_IER)), (0x34, 0x12));
        r.outb(REG_LCR, 3);
        assert_eq!(r.dev.baud(), 1_843_200 / 16 / 0x1234);
    }

    #[test]
    fn loopback_msr_follows_mcr_with_delta_bits() {
        let mut r = rig();
        r.inb(REG_MSR); // clear deltas
        r.outb(REG_MCR, MCR_LOOP);
        // All outputs off: CTS/DSR/DCD dropped, so their deltas are set.
        assert_eq!(r.inb(REG_MSR), MSR_DCTS | MSR_DDSR | MSR_DDCD);
        r.outb(REG_MCR, MCR_LOOP | MCR_OUT1 | MCR_DTR);
        assert_eq!(r.inb(REG_MSR), MSR_RI | MSR_DSR | MSR_DDSR);
        r.outb(REG_MCR, MCR_LOOP);
        // RI falling edge gives TERI.
        assert_eq!(r.inb(REG_MSR), MSR_TERI | MSR_DDSR);
        assert_eq!(r.inb(REG_MSR), 0);
        // Loopback data returns to the receiver; the host sees nothing.
        r.outb(REG_LCR, 0x03);
        r.dev.set_fast(true);
        r.outb(REG_DATA, 0x42);
        assert_eq!(r.inb(REG_LSR) & LSR_DR, LSR_DR);
        assert_eq!(r.inb(REG_DATA), 0x42);
        assert!(r.dev.take_output().is_empty());
        assert!(!r.dev.can_receive());
    }

    #[test]
    fn transmit_at_baud_rate_with_thre_interrupts() {
        let mut r = rig();
        r.setup_115200();
        r.outb(REG_IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
        r.outb(REG_MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
        let ct = r.dev.char_time();
        // 86805 ns per character at 115200 8N1.
        assert_eq!(ct, 10 * 16 * 1_000_000_000 / 1_843_200);
        // Linux's THRE test: enable ETBEI, IIR shows THRI; reading IIR clears it;
        // re-enabling ETBEI raises it again.
        r.outb(REG_IER, IER_ETBEI);
        assert!(r.irq());
        assert_eq!(r.inb(REG_IIR_FCR), 0xC0 | IIR_THRI);
        assert_eq!(r.inb(REG_IIR_FCR), 0xC1);
        assert!(!r.irq());
        r.outb(REG_IER, 0);
        r.outb(REG_IER, IER_ETBEI);
        assert_eq!(r.inb(REG_IIR_FCR), 0xC2);
        // Write 16 bytes: the first goes to the shift register, 15 wait in the FIFO.
        for b in b"Hello, 16550A!!!" {
            r.outb(REG_DATA, *b);
        }
        assert!(!r.irq());
        assert_eq!(r.inb(REG_LSR) & (LSR_THRE | LSR_TEMT), 0);
        assert_eq!(r.dev.next_deadline(), Some(ct));
        r.run_to(ct * 5 + 1);
        assert_eq!(r.dev.take_output(), b"Hello");
        assert_eq!(r.inb(REG_IIR_FCR), 0xC1);
        // After 15 character times the FIFO is empty (last byte in the shift register).
        r.run_to(ct * 15);
        assert_eq!(r.inb(REG_LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE);
        assert!(r.irq());
        assert_eq!(r.inb(REG_IIR_FCR), 0xC2);
        assert!(!r.irq());
        r.run_to(ct * 16);
        assert_eq!(r.dev.take_output(), b", 16550A!!!");
        assert_eq!(r.inb(REG_LSR) & 0x60, LSR_THRE | LSR_TEMT);
        assert_eq!(r.dev.next_deadline(), None);
        // Writing THR clears a pending THRE interrupt.
        r.outb(REG_DATA, b'x');
        assert_eq!(r.inb(REG_IIR_FCR), 0xC2); // x moved to TSR, THR empty again
                                              // OUT2 gates the line.
        r.outb(REG_IER, 0);
        r.outb(REG_MCR, MCR_DTR);
        r.outb(REG_IER, IER_ETBEI);
        assert!(!r.irq());
        r.outb(REG_MCR, MCR_DTR | MCR_OUT2);
        assert!(r.irq());
    }

    #[test]
    fn non_fifo_mode_at_9600_7e2() {
        let mut r = rig();
        r.outb(REG_LCR, LCR_DLAB);
        r.outb(REG_DATA, 12);
        r.outb(REG_IER, 0);
        // 7 data bits, even parity, 2 stop bits: 11 bits per character.
        r.outb(REG_LCR, 0x02 | LCR_STOP | LCR_PARITY | 0x10);
        assert_eq!(r.dev.baud(), 9600);
        let ct = r.dev.char_time();
        assert_eq!(ct, 1_145_833);
        r.outb(REG_MCR, MCR_OUT2);
        r.outb(REG_IER, IER_ETBEI);
        assert_eq!(r.inb(REG_IIR_FCR), IIR_THRI); // no FIFO bits
                                                  // First byte goes straight to the shift register: THR empty again at once.
        r.outb(REG_DATA, 0xC1); // bit 7 is not sent with 7-bit words
        assert_eq!(r.inb(REG_IIR_FCR), IIR_THRI);
        // Second byte waits in THR until the first has gone.
        r.outb(REG_DATA, b'B');
        assert_eq!(r.inb(REG_LSR) & (LSR_THRE | LSR_TEMT), 0);
        assert!(!r.irq());
        r.run_to(ct);
        assert!(r.irq());
        assert_eq!(r.inb(REG_LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE);
        r.run_to(2 * ct);
        assert_eq!(r.inb(REG_LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
        assert_eq!(r.dev.take_output(), [0x41, b'B']);
    }

    #[test]
    fn fast_mode_delivers_at_once() {
        let mut r = rig();
        r.outb(REG_LCR, 0x03); // 8 data bits (reset state is 5)
        r.dev.set_fast(true);
        for b in b"ok\n" {
            r.outb(REG_DATA, *b);
        }
        let mut buf = [0u8; 2];
        assert_eq!(r.dev.drain_output(&mut buf), 2);
        assert_eq!(&buf, b"ok");
        assert_eq!(r.dev.take_output(), b"\n");
        assert_eq!(r.inb(REG_LSR), LSR_THRE | LSR_TEMT);
    }

    #[test]
    fn receive_trigger_level_and_character_timeout() {
        let mut r = rig();
        r.setup_115200();
        // FIFO on, trigger level 8.
        r.outb(REG_IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | 0x80);
        r.outb(REG_MCR, MCR_OUT2);
        r.outb(REG_IER, IER_ERBFI);
        let ct = r.dev.char_time();
        for (i, b) in (b'a'..=b'g').enumerate() {
            assert!(r.dev.can_receive());
            r.now = i as u64 * ct;
            r.receive(b);
        }
        // 7 bytes: below the trigger, no interrupt yet.
        assert!(!r.irq());
        assert_eq!(r.inb(REG_IIR_FCR), 0xC1);
        r.receive(b'h');
        assert!(r.irq());
        assert_eq!(r.inb(REG_IIR_FCR), 0xC4);
        // Guest drains 5 bytes: below the trigger again.
        for b in b"abcde" {
            assert_eq!(r.inb(REG_DATA), *b);
        }
        assert!(!r.irq());
        // Four character times later the timeout interrupt fires.
        let t_read = r.now;
        assert_eq!(r.dev.next_deadline(), Some(t_read + 4 * ct));
        r.run_to(t_read + 4 * ct - 1);
        assert!(!r.irq());
        r.run_to(t_read + 4 * ct);
        assert!(r.irq());
        assert_eq!(r.inb(REG_IIR_FCR), 0xCC);
        // Reading a byte clears it; draining the rest leaves no interrupt.
        assert_eq!(r.inb(REG_DATA), b'f');
        assert_eq!(r.inb(REG_IIR_FCR), 0xC1);
        assert_eq!(r.inb(REG_DATA), b'g');
        assert_eq!(r.inb(REG_DATA), b'h');
        assert_eq!(r.inb(REG_LSR) & LSR_DR, 0);
        r.run_to(t_read + 100 * ct);
        assert!(!r.irq());
    }

    #[test]
    fn overrun_sets_oe_and_line_status_interrupt() {
        let mut r = rig();
        r.outb(REG_IIR_FCR, FCR_ENABLE);
        r.outb(REG_MCR, MCR_OUT2);
        r.outb(REG_IER, IER_ELSI | IER_ERBFI);
        for i in 0..16 {
            r.receive(i);
        }
        assert!(!r.dev.can_receive());
        r.receive(0xEE);
        assert_eq!(r.inb(REG_IIR_FCR), 0xC6);
        assert_eq!(r.inb(REG_LSR), LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT);
        assert_eq!(r.inb(REG_LSR), LSR_DR | LSR_THRE | LSR_TEMT);
        assert_eq!(r.inb(REG_IIR_FCR), 0xC4);
        for i in 0..16 {
            assert_eq!(r.inb(REG_DATA), i);
        }
        // Without FIFOs the holding register holds one byte.
        r.outb(REG_IIR_FCR, 0);
        r.receive(1);
        r.receive(2);
        assert_eq!(r.inb(REG_LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(r.inb(REG_DATA), 2);
        assert_eq!(r.inb(REG_IIR_FCR), 0x01);
    }

    #[test]
    fn modem_status_interrupt_and_break() {
        let mut r = rig();
        r.outb(REG_MCR, MCR_OUT2);
        r.inb(REG_MSR);
        r.outb(REG_IER, IER_EDSSI | IER_ELSI);
        {
            r.with(|d, ctx| d.set_modem_inputs(MSR_CTS | MSR_DSR, ctx));
        }
        assert!(r.irq());
        assert_eq!(r.inb(REG_IIR_FCR), IIR_MSI);
        assert_eq!(r.inb(REG_MSR), MSR_CTS | MSR_DSR | MSR_DDCD);
        assert_eq!(r.inb(REG_IIR_FCR), IIR_NO_INT);
        {
            r.with(|d, ctx| d.receive_break(ctx));
        }
        assert_eq!(r.inb(REG_IIR_FCR), IIR_RLSI);
        assert_eq!(
            r.inb(REG_LSR) & (LSR_BI | LSR_FE | LSR_DR),
            LSR_BI | LSR_FE | LSR_DR
        );
        assert_eq!(r.inb(REG_DATA), 0);
    }

    #[test]
    fn any_port_any_size_never_panics() {
        let mut r = rig();
        for off in 0..16u32 {
            for size in [1u8, 2, 4, 3, 0] {
                for v in [0u32, 0xFFFF_FFFF, 0x80, 0x1F] {
                    r.write(off as u16, size, v);
                    r.read(off as u16, size);
                    r.now += 1000;
                }
            }
        }
        r.outb(REG_LCR, LCR_DLAB);
        r.outb(REG_DATA, 0);
        r.outb(REG_IER, 0);
        r.outb(REG_LCR, 0);
        r.outb(REG_DATA, 1);
        r.run_to(u64::MAX / 2);
        // The state round-trips through serde.
        let json = serde_json::to_string(&r.dev).unwrap();
        let back: Uart = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}
