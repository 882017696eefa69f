//! The 8254 programmable interval timer at 0x40-0x43.
//!
//! Three channels clocked at 1.193182 MHz. Nothing ticks: each channel remembers when its counting
//! element was loaded (in input-clock ticks derived from the virtual time in ns) and computes its
//! count and OUT level at any later tick. Channel 0's OUT drives IRQ0; [`Pit::next_deadline`] is
//! the next time OUT0 changes, so the board calls [`Pit::advance`] then and the line follows.
//! Channel 1 (DRAM refresh) has no output wired. Channel 2's gate and output belong to system
//! control port B (0x61), which is served by the PIT too (see [`super::sysctl`]).
//!
//! # Wiring for the board
//!
//! Map both 0x40-0x43 and [`PORT_B`] to the [`Pit`] (it implements [`Device`], and tells the
//! two apart by the base of the access), and register it as [`Timed`]. After each access or
//! advance, hand `irq.levels()` to the PIC and re-read `next_deadline()`.
//!
//! # IRQ0 edges
//!
//! The PIC latches IRQ0 on a rising edge. If the board reaches a deadline late and OUT0 has both
//! fallen and risen since the last advance (mode 2's one-tick low pulse, say), the PIT drives IRQ0
//! low now and asks to be advanced again at once ([`Pit::next_deadline`] returns the same time),
//! when it raises the line: the board must give the IRQ levels to the PIC between the two calls.
//!
//! # Datasheet details kept and simplified
//!
//! A count written is loaded into the counting element on the next clock, as on the 8254. In
//! mode 3 a new count written while counting takes effect at the end of the current full cycle
//! (the 8254 switches at the end of the half cycle); in mode 2 at the end of the current cycle.

use serde::{Deserialize, Serialize};

use super::sysctl::PortB;
use super::{At, DevCtx, Device, Nanos, Timed};

/// The input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Nanoseconds per second.
const NS_PER_SEC: u64 = 1_000_000_000;

/// Offset of channel 0's counter port (0x40); channels 1 and 2 follow.
const REG_COUNTER0: u16 = 0;
/// Offset of channel 2's counter port (0x42).
const REG_COUNTER2: u16 = 2;
/// Offset of the mode/command register (0x43, write-only).
const REG_CONTROL: u16 = 3;

/// Control word bits 7-6: the channel selected (3 = read-back command).
const CTRL_SC_SHIFT: u8 = 6;
/// Select-channel value of the read-back command.
const CTRL_SC_READBACK: u8 = 3;
/// Control word bits 5-4: access mode (0 = counter latch command).
const CTRL_RW_SHIFT: u8 = 4;
/// Access mode 0: counter latch command.
const RW_LATCH: u8 = 0;
/// Access mode 1: low byte only.
const RW_LSB: u8 = 1;
/// Access mode 2: high byte only.
const RW_MSB: u8 = 2;
/// Control word bits 5-0 kept per channel (access mode, mode, BCD) and shown in the status byte.
const CTRL_PROGRAM_MASK: u8 = 0x3F;
/// Control word bit 0: count in BCD (four decades) instead of binary.
const CTRL_BCD: u8 = 0x01;
/// Read-back bit 5 (active low): latch the counts of the selected channels.
const RB_NO_COUNT: u8 = 0x20;
/// Read-back bit 4 (active low): latch the status of the selected channels.
const RB_NO_STATUS: u8 = 0x10;
/// Read-back bit 1: channel 0 selected (bit 2 channel 1, bit 3 channel 2).
const RB_CHANNEL0: u8 = 0x02;
/// Status byte bit 7: the OUT pin level.
const STATUS_OUT: u8 = 0x80;
/// Status byte bit 6: null count (the last count written has not been loaded yet).
const STATUS_NULL_COUNT: u8 = 0x40;

/// Clock ticks elapsed at virtual time `ns` (floor).
pub fn ns_to_ticks(ns: Nanos) -> u64 {
    (u128::from(ns) * u128::from(PIT_HZ) / u128::from(NS_PER_SEC)) as u64
}

/// The virtual time at which clock tick `tick` happens (the first ns with `ns_to_ticks >= tick`).
pub fn ticks_to_ns(tick: u64) -> Nanos {
    let ns = (u128::from(tick) * u128::from(NS_PER_SEC)).div_ceil(u128::from(PIT_HZ));
    ns.min(u128::from(u64::MAX)) as u64
}

/// Binary value to packed BCD (four decades).
fn to_bcd(v: u32) -> u16 {
    let v = v % 10_000;
    (((v / 1000) << 12) | ((v / 100 % 10) << 8) | ((v / 10 % 10) << 4) | (v % 10)) as u16
}

/// Packed BCD to binary (nibbles above 9 are taken at face value, as the counter would).
fn from_bcd(v: u16) -> u32 {
    let d = |s: u16| u32::from((v >> s) & 0xF);
    d(12) * 1000 + d(8) * 100 + d(4) * 10 + d(0)
}

/// A stretch of counting since the counting element was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counting {
    /// The tick at which the counting element holds `n` (counting starts after it).
    pub start: u64,
    /// Modes 0, 1, 4, 5: ticks from `start` to terminal count (the element's value at `start`,
    /// 1..=0x10000). Modes 2, 3: the reload value. While stopped: the frozen element value.
    pub n: u32,
    /// The gate lets the element count (false: frozen at `n`).
    pub running: bool,
    /// Modes 0 and 4: terminal count has already passed (OUT high / strobe given).
    pub expired: bool,
}

/// One counter of the 8254.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Access mode, mode and BCD bits of the last control word (bits 5-0).
    pub control: u8,
    /// The count register as last written (binary or BCD).
    pub cr: u16,
    /// A complete count has been written since the control word.
    pub count_written: bool,
    /// LSB-then-MSB access: the next write is the MSB.
    pub write_msb_next: bool,
    /// LSB-then-MSB access: the next read is the MSB.
    pub read_msb_next: bool,
    /// Latched count (counter latch or read-back), until read.
    pub latch: Option<u16>,
    /// Latched status byte (read-back), read before the count.
    pub status: Option<u8>,
    /// A count was written and not yet transferred to the counting element...
    pub null_count: bool,
    /// ...until this tick (None: until a gate trigger).
    pub null_clears_at: Option<u64>,
    /// The gate input level.
    pub gate: bool,
    /// The counting element since its last load, if loaded since the control word.
    pub counting: Option<Counting>,
    /// Modes 2 and 3: a new count to reload at this tick (end of the current cycle).
    pub reload_at: Option<(u64, u32)>,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            control: 3 << CTRL_RW_SHIFT,
            cr: 0,
            count_written: false,
            write_msb_next: false,
            read_msb_next: false,
            latch: None,
            status: None,
            null_count: true,
            null_clears_at: None,
            gate: true,
            counting: None,
            reload_at: None,
        }
    }
}

/// First tick after `t` where a periodic OUT changes: falls at phase `f`, rises at phase 0.
fn periodic_change(start: u64, n: u64, f: u64, t: u64) -> u64 {
    let u = t.saturating_add(1);
    if u <= start {
        return start + f;
    }
    let rel = u - start;
    let (k, ph) = (rel / n, rel % n);
    if ph == 0 {
        u
    } else if ph <= f {
        start + k * n + f
    } else {
        start + (k + 1) * n
    }
}

impl Channel {
    /// The operating mode 0-5 (6 and 7 are aliases of 2 and 3).
    pub fn mode(&self) -> u8 {
        let m = (self.control >> 1) & 7;
        if m >= 6 {
            m - 4
        } else {
            m
        }
    }

    fn access(&self) -> u8 {
        (self.control >> CTRL_RW_SHIFT) & 3
    }

    fn bcd(&self) -> bool {
        self.control & CTRL_BCD != 0
    }

    /// The counter's range: 0x10000 binary, 10000 BCD.
    fn modulus(&self) -> u32 {
        if self.bcd() {
            10_000
        } else {
            0x1_0000
        }
    }

    /// The count register as a binary initial count (0 means the full range).
    fn initial(&self) -> u32 {
        let v = if self.bcd() {
            from_bcd(self.cr) % 10_000
        } else {
            u32::from(self.cr)
        };
        if v == 0 {
            self.modulus()
        } else {
            v
        }
    }

    /// The counting stretch in force at tick `t`.
    fn seg_at(&self, t: u64) -> Option<Counting> {
        match self.reload_at {
            Some((s, n)) if t >= s => Some(Counting {
                start: s,
                n,
                running: true,
                expired: false,
            }),
            _ => self.counting,
        }
    }

    /// Fold a due reload into the current stretch.
    fn normalize(&mut self, t: u64) {
        if let Some((s, _)) = self.reload_at.filter(|&(s, _)| t >= s) {
            self.counting = self.seg_at(s);
            self.reload_at = None;
        }
    }

    /// The OUT level at tick `t`.
    pub fn out_at(&self, t: u64) -> bool {
        let Some(c) = self.seg_at(t) else {
            // After the control word: mode 0 starts low, all others high.
            return self.mode() != 0;
        };
        let end = c.start.saturating_add(c.n.into());
        match self.mode() {
            0 => c.expired || (c.running && t >= end),
            1 => !(c.running && t >= c.start && t < end),
            2 | 3 if !c.running || t < c.start || c.n < 2 => true,
            2 => (t - c.start) % u64::from(c.n) != u64::from(c.n) - 1,
            3 => (t - c.start) % u64::from(c.n) < u64::from(c.n).div_ceil(2),
            _ => !(c.running && !c.expired && t == end),
        }
    }

    /// The counting element's value at tick `t` (binary, within the counter's range).
    fn count_at(&self, t: u64) -> u32 {
        let m = self.modulus();
        let Some(c) = self.seg_at(t) else {
            return self.initial() % m;
        };
        if !c.running || t < c.start {
            return c.n % m;
        }
        let el = t - c.start;
        let v = match self.mode() {
            2 => {
                let n = u64::from(c.n.max(1));
                (n - el % n) as u32
            }
            3 => {
                let n = u64::from(c.n.max(1));
                let phase = el % n;
                let high = n.div_ceil(2);
                let base = n & !1;
                let p = if phase < high { phase } else { phase - high };
                base.saturating_sub(2 * p) as u32
            }
            _ => {
                let m64 = u64::from(m);
                ((u64::from(c.n) % m64 + m64 - el % m64) % m64) as u32
            }
        };
        v % m
    }

    /// The value a read returns for the count at tick `t` (BCD-encoded in BCD mode).
    fn read_value(&self, t: u64) -> u16 {
        let v = self.count_at(t);
        if self.bcd() {
            to_bcd(v)
        } else {
            v as u16
        }
    }

    /// The read-back status byte at tick `t`.
    fn status_at(&self, t: u64) -> u8 {
        let null = self.null_count && self.null_clears_at.is_none_or(|c| t < c);
        let mut s = self.control & CTRL_PROGRAM_MASK;
        if self.out_at(t) {
            s |= STATUS_OUT;
        }
        if null {
            s |= STATUS_NULL_COUNT;
        }
        s
    }

    /// First tick after `t` at which OUT may change within stretch `c`.
    fn seg_change(&self, c: &Counting, t: u64) -> Option<u64> {
        if !c.running {
            return None;
        }
        let end = c.start.saturating_add(c.n.into());
        let n = u64::from(c.n);
        match self.mode() {
            0 if c.expired => None,
            0 => (end > t).then_some(end),
            1 => [c.start, end].into_iter().find(|&x| x > t),
            2 | 3 if n < 2 => None,
            2 => Some(periodic_change(c.start, n, n - 1, t)),
            3 => Some(periodic_change(c.start, n, n.div_ceil(2), t)),
            _ if c.expired => None,
            _ => [end, end.saturating_add(1)].into_iter().find(|&x| x > t),
        }
    }

    /// The first tick after `t` at which OUT changes, if it ever does without new input.
    pub fn next_change_after(&self, t: u64) -> Option<u64> {
        let fresh = |s, n| Counting {
            start: s,
            n,
            running: true,
            expired: false,
        };
        match self.reload_at {
            Some((s, n)) if t < s => {
                let old = self.counting.and_then(|c| self.seg_change(&c, t));
                if let Some(c) = old.filter(|&c| c < s) {
                    return Some(c);
                }
                if s > 0 && self.out_at(s) != self.out_at(s - 1) {
                    return Some(s);
                }
                self.seg_change(&fresh(s, n), s)
            }
            Some((s, n)) => self.seg_change(&fresh(s, n), t),
            None => self.seg_change(self.counting.as_ref()?, t),
        }
    }

    /// The first tick after `t` at which OUT rises.
    fn next_rise_after(&self, t: u64) -> Option<u64> {
        let mut t = t;
        for _ in 0..4 {
            let c = self.next_change_after(t)?;
            if self.out_at(c) && (c == 0 || !self.out_at(c - 1)) {
                return Some(c);
            }
            t = c;
        }
        None
    }

    /// The counting stretch frozen at tick `t` (gate low, or mode 0's first count byte).
    fn frozen(&self, t: u64) -> Option<Counting> {
        let c = self.seg_at(t)?;
        let end = c.start.saturating_add(c.n.into());
        let expired = match self.mode() {
            0 => self.out_at(t),
            4 => c.expired || (c.running && t >= end),
            _ => false,
        };
        let n = match self.mode() {
            0 | 4 if c.running && !expired => end.saturating_sub(t.max(c.start)) as u32,
            _ => self.count_at(t),
        };
        Some(Counting {
            start: t,
            n,
            running: false,
            expired,
        })
    }

    /// The guest programs the channel with a control word (bits 5-0).
    fn program(&mut self, control: u8) {
        *self = Channel {
            control: control & CTRL_PROGRAM_MASK,
            cr: self.cr,
            gate: self.gate,
            ..Channel::default()
        };
    }

    /// A complete count has been written at tick `t`: load it per the mode.
    fn load(&mut self, t: u64) {
        self.count_written = true;
        self.null_count = true;
        let n = self.initial();
        let fresh = Counting {
            start: t + 1,
            n,
            running: self.gate,
            expired: false,
        };
        match self.mode() {
            0 | 4 => {
                self.counting = Some(fresh);
                self.null_clears_at = Some(t + 1);
            }
            1 | 5 => self.null_clears_at = None,
            _ => match self.counting {
                Some(c) if c.running && t >= c.start => {
                    let period = u64::from(c.n.max(1));
                    let s = c.start + ((t - c.start) / period + 1) * period;
                    self.reload_at = Some((s, n));
                    self.null_clears_at = Some(s);
                }
                Some(c) if !c.running => self.null_clears_at = None,
                _ => {
                    self.counting = Some(fresh);
                    self.null_clears_at = self.gate.then_some(t + 1);
                }
            },
        }
    }

    /// The gate input changes to `level` at tick `t`.
    pub fn set_gate(&mut self, level: bool, t: u64) {
        if level == self.gate {
            return;
        }
        self.normalize(t);
        self.gate = level;
        let mode = self.mode();
        if level {
            match mode {
                // Rising gate resumes counting where it stopped.
                0 | 4 => {
                    if let Some(c) = self.counting.as_mut() {
                        c.start = t + 1;
                        c.running = true;
                    }
                }
                // Rising gate (re)triggers: reload the count on the next clock.
                _ if self.count_written => {
                    self.counting = Some(Counting {
                        start: t + 1,
                        n: self.initial(),
                        running: true,
                        expired: false,
                    });
                    self.reload_at = None;
                    self.null_clears_at = Some(t + 1);
                }
                _ => {}
            }
        } else if matches!(mode, 0 | 2 | 3 | 4) && self.counting.is_some_and(|c| c.running) {
            // Falling gate suspends counting (modes 2 and 3 also force OUT high).
            self.counting = self.frozen(t);
            self.reload_at = None;
        }
    }

    /// Guest writes a byte to the counter port at tick `t`.
    fn write(&mut self, v: u8, t: u64) {
        self.normalize(t);
        match self.access() {
            RW_LSB => {
                self.cr = u16::from(v);
                self.load(t);
            }
            RW_MSB => {
                self.cr = u16::from(v) << 8;
                self.load(t);
            }
            _ if !self.write_msb_next => {
                self.cr = (self.cr & 0xFF00) | u16::from(v);
                self.write_msb_next = true;
                if self.mode() == 0 {
                    // Writing the first byte stops the count and sets OUT low.
                    self.counting = self.frozen(t).map(|c| Counting {
                        expired: false,
                        ..c
                    });
                }
            }
            _ => {
                self.cr = (self.cr & 0x00FF) | u16::from(v) << 8;
                self.write_msb_next = false;
                self.load(t);
            }
        }
    }

    /// Guest reads the counter port at tick `t`.
    fn read(&mut self, t: u64) -> u8 {
        if let Some(s) = self.status.take() {
            return s;
        }
        let (v, latched) = match self.latch {
            Some(l) => (l, true),
            None => (self.read_value(t), false),
        };
        let [lo, hi] = v.to_le_bytes();
        let (byte, done) = match self.access() {
            RW_LSB => (lo, true),
            RW_MSB => (hi, true),
            _ if !self.read_msb_next => {
                self.read_msb_next = true;
                (lo, false)
            }
            _ => {
                self.read_msb_next = false;
                (hi, true)
            }
        };
        if latched && done {
            self.latch = None;
        }
        byte
    }

    /// Counter latch command at tick `t` (ignored while a latched count is unread).
    fn latch_count(&mut self, t: u64) {
        if self.latch.is_none() {
            self.latch = Some(self.read_value(t));
        }
    }
}

/// The 8254 with port B's latched bits (which share channel 2's gate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pit {
    /// Channels 0-2.
    pub channels: [Channel; 3],
    /// Port 0x61's own latched bits (see [`super::sysctl`]).
    pub port_b: PortB,
    /// The level the PIT drives on IRQ0.
    pub irq0: bool,
    /// IRQ0 was driven low to make a missed rising edge; raise it at the next advance.
    pub irq0_raise_pending: bool,
    /// The tick up to which OUT0 has been followed.
    pub synced_tick: u64,
    /// The virtual time of the last sync.
    pub synced_ns: Nanos,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// The timer at power-on: channels unprogrammed, channel 2 gate low.
    pub fn new() -> Self {
        let mut channels: [Channel; 3] = Default::default();
        channels[2].gate = false;
        Pit {
            channels,
            port_b: PortB::default(),
            irq0: false,
            irq0_raise_pending: false,
            synced_tick: 0,
            synced_ns: 0,
        }
    }

    /// Follow OUT0 up to `ctx.now` and drive IRQ0.
    fn sync(&mut self, ctx: &mut DevCtx) {
        let t = ns_to_ticks(ctx.now).max(self.synced_tick);
        for ch in &mut self.channels {
            ch.normalize(t);
        }
        let ch0 = &self.channels[0];
        let rose = ch0
            .next_rise_after(self.synced_tick)
            .is_some_and(|r| r <= t);
        let out = ch0.out_at(t);
        let level = if self.irq0_raise_pending {
            self.irq0_raise_pending = false;
            out
        } else if rose && out && self.irq0 {
            // OUT0 fell and rose since the last call: make the edge the PIC needs.
            self.irq0_raise_pending = true;
            false
        } else {
            out
        };
        self.irq0 = level;
        ctx.irq.set(0, level);
        self.synced_tick = t;
        self.synced_ns = self.synced_ns.max(ctx.now);
    }

    /// Channel 2's OUT at virtual time `now` (port 0x61 bit 5).
    pub fn out2(&self, now: Nanos) -> bool {
        self.channels[2].out_at(ns_to_ticks(now))
    }

    /// Channel 2's gate (port 0x61 bit 0).
    pub fn gate2(&self) -> bool {
        self.channels[2].gate
    }

    /// Set channel 2's gate at virtual time `now` (port 0x61 bit 0).
    pub fn set_gate2(&mut self, level: bool, now: Nanos) {
        self.channels[2].set_gate(level, ns_to_ticks(now));
    }

    /// Guest reads a byte at offset `reg` (0x40 + reg).
    fn read_reg(&mut self, reg: u16, t: u64) -> u8 {
        match reg {
            // Guest reads a counter (a latched status or count first, else the live count).
            REG_COUNTER0..=REG_COUNTER2 => self.channels[usize::from(reg)].read(t),
            // The control register is write-only.
            _ => 0xFF,
        }
    }

    /// Guest writes a byte at offset `reg` (0x40 + reg).
    fn write_reg(&mut self, reg: u16, v: u8, t: u64) {
        match reg {
            // Guest writes (part of) a count.
            REG_COUNTER0..=REG_COUNTER2 => self.channels[usize::from(reg)].write(v, t),
            // Guest issues the read-back command (latch status and/or count of several channels).
            REG_CONTROL if v >> CTRL_SC_SHIFT == CTRL_SC_READBACK => {
                for (i, ch) in self.channels.iter_mut().enumerate() {
                    if v & (RB_CHANNEL0 << i) == 0 {
                        continue;
                    }
                    if v & RB_NO_STATUS == 0 && ch.status.is_none() {
                        ch.status = Some(ch.status_at(t));
                    }
                    if v & RB_NO_COUNT == 0 {
                        ch.latch_count(t);
                    }
                }
            }
            // Guest latches one channel's count to read it consistently.
            REG_CONTROL if (v >> CTRL_RW_SHIFT) & 3 == RW_LATCH => {
                self.channels[usize::from(v >> CTRL_SC_SHIFT)].latch_count(t);
            }
            // Guest programs a channel's access mode, mode and BCD.
            REG_CONTROL => self.channels[usize::from(v >> CTRL_SC_SHIFT)].program(v),
            _ => {}
        }
    }
}

/// Port B's address: the PIT answers there too (see [`super::sysctl`]).
pub const PORT_B: u16 = 0x61;
const PORT_B_WINDOW: u32 = PORT_B as u32;

/// The PIT at its range (0x40-0x43), and port B at [`PORT_B`].
impl Device for Pit {
    fn read(&mut self, at: At, size: u8, ctx: &mut DevCtx) -> u32 {
        if at.base == PORT_B_WINDOW {
            return self.port_b_read(at.offset, ctx);
        }
        self.sync(ctx);
        let t = self.synced_tick;
        (0..size.min(4)).fold(0, |acc, i| {
            let reg = (at.offset as u16).wrapping_add(i.into());
            acc | u32::from(self.read_reg(reg, t)) << (8 * i)
        })
    }

    fn write(&mut self, at: At, size: u8, value: u32, ctx: &mut DevCtx) {
        if at.base == PORT_B_WINDOW {
            self.port_b_write(at.offset, value, ctx);
            return;
        }
        self.sync(ctx);
        let t = self.synced_tick;
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .take(size.into())
            .enumerate()
        {
            self.write_reg((at.offset as u16).wrapping_add(i as u16), byte, t);
        }
        self.sync(ctx);
    }
}

impl Timed for Pit {
    fn next_deadline(&self) -> Option<Nanos> {
        if self.irq0_raise_pending {
            return Some(self.synced_ns);
        }
        let c = self.channels[0].next_change_after(self.synced_tick)?;
        Some(ticks_to_ns(c))
    }

    fn advance(&mut self, ctx: &mut DevCtx) {
        self.sync(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PIT with the IRQ lines and board signals it drives, at a settable virtual time.
    type Rig = crate::dev::testing::Rig<Pit>;

    fn rig() -> Rig {
        Rig::new(Pit::new(), 0x40)
    }

    impl Rig {
        /// OUT to the PIT's port `port` (0x40-0x43).
        fn pit_out(&mut self, port: u16, v: u8) {
            self.outb(port - 0x40, v);
        }
        /// IN from the PIT's port `port` (0x40-0x43).
        fn pit_in(&mut self, port: u16) -> u8 {
            self.inb(port - 0x40)
        }
        /// Run to the next deadline; returns it and the IRQ0 level there.
        fn step_irq0(&mut self) -> (Nanos, bool) {
            let d = self.step();
            (d, self.irq.get(0))
        }
    }

    #[test]
    fn tick_conversion_round_trips() {
        assert_eq!(ns_to_ticks(1_000_000_000), PIT_HZ);
        for tick in [0, 1, 2, 1193, 1_193_182, 123_456_789] {
            assert_eq!(ns_to_ticks(ticks_to_ns(tick)), tick);
            assert_eq!(
                ns_to_ticks(ticks_to_ns(tick) - u64::from(tick > 0)),
                tick.saturating_sub(1)
            );
        }
    }

    #[test]
    fn mode2_periodic_irq0_edges_at_the_right_times() {
        let mut r = rig();
        r.now = 1000; // tick 1
                      // Linux setup_pit_timer: mode 2, LSB/MSB, LATCH = 1193 (HZ=1000).
        r.pit_out(0x43, 0x34);
        r.pit_out(0x40, (1193 & 0xFF) as u8);
        r.pit_out(0x40, (1193 >> 8) as u8);
        assert!(r.irq.get(0), "mode 2 OUT is high");
        // Loaded at tick 2; OUT low at tick 2+1192, high again at tick 2+1193.
        let (d, level) = r.step_irq0();
        assert_eq!(d, ticks_to_ns(2 + 1192));
        assert!(!level);
        let (d, level) = r.step_irq0();
        assert_eq!(d, ticks_to_ns(2 + 1193));
        assert!(level);
        let (d, level) = r.step_irq0();
        assert_eq!(d, ticks_to_ns(2 + 2 * 1193 - 1));
        assert!(!level);
        let (d2, level) = r.step_irq0();
        assert!(level);
        // A 999.847 us period.
        assert!((999_846..=999_848).contains(&(d2 - ticks_to_ns(2 + 1193))));
    }

    #[test]
    fn counter_latch_and_read_back() {
        let mut r = rig();
        r.pit_out(0x43, 0x34);
        r.pit_out(0x40, 0xA9);
        r.pit_out(0x40, 0x04); // 1193
                               // Same tick as the write: the count is not loaded yet (null count set).
        r.pit_out(0x43, 0xC2); // read back count and status of channel 0
        assert_eq!(r.pit_in(0x40), 0x80 | 0x40 | 0x34);
        assert_eq!(r.pit_in(0x40), 0xA9);
        assert_eq!(r.pit_in(0x40), 0x04);
        // 100 ticks after the load (loaded at tick 1): count 1193 - 100.
        r.now = ticks_to_ns(101);
        r.pit_out(0x43, 0x00); // latch channel 0
        r.now = ticks_to_ns(500); // the latch holds
        let lo = r.pit_in(0x40);
        let hi = r.pit_in(0x40);
        assert_eq!(u16::from_le_bytes([lo, hi]), 1093);
        // Live reads now see the current count.
        let lo = r.pit_in(0x40);
        let hi = r.pit_in(0x40);
        assert_eq!(u16::from_le_bytes([lo, hi]), 1193 - 499);
        // Read back status only: null count clear now.
        r.pit_out(0x43, 0xE2 | 0x20);
        assert_eq!(r.pit_in(0x40), 0x80 | 0x34);
        // A second latch before reading is ignored.
        r.pit_out(0x43, 0x00);
        r.now = ticks_to_ns(600);
        r.pit_out(0x43, 0x00);
        let lo = r.pit_in(0x40);
        let hi = r.pit_in(0x40);
        assert_eq!(u16::from_le_bytes([lo, hi]), 1193 - 499);
    }

    #[test]
    fn mode0_one_shot_raises_irq0_once() {
        let mut r = rig();
        r.pit_out(0x43, 0x30);
        assert!(!r.irq.get(0));
        r.pit_out(0x40, 100);
        r.pit_out(0x40, 0);
        assert!(!r.irq.get(0));
        let (d, level) = r.step_irq0();
        assert_eq!(d, ticks_to_ns(101));
        assert!(level);
        assert_eq!(r.dev.next_deadline(), None);
        // The counter wraps after terminal count.
        r.now = ticks_to_ns(103);
        r.pit_out(0x43, 0x00);
        assert_eq!(r.pit_in(0x40), 0xFE);
        assert_eq!(r.pit_in(0x40), 0xFF);
        // A new control word drops OUT.
        r.pit_out(0x43, 0x30);
        assert!(!r.irq.get(0));
    }

    #[test]
    fn mode0_first_byte_stops_counting() {
        let mut r = rig();
        r.pit_out(0x43, 0x30);
        r.pit_out(0x40, 0x10);
        r.pit_out(0x40, 0x00);
        r.now = ticks_to_ns(6);
        r.pit_out(0x40, 0x20); // LSB of a new count: counting stops at 16 - 5
        r.now = ticks_to_ns(50);
        r.pit_out(0x43, 0x00);
        assert_eq!(r.pit_in(0x40), 11);
        assert_eq!(r.pit_in(0x40), 0);
        assert_eq!(r.dev.next_deadline(), None);
        r.pit_out(0x40, 0x00); // MSB: load 0x20 at tick 51
        assert_eq!(r.step_irq0().0, ticks_to_ns(51 + 0x20));
        assert!(r.irq.get(0));
    }

    #[test]
    fn missed_pulse_still_produces_an_edge() {
        let mut r = rig();
        r.pit_out(0x43, 0x34);
        r.pit_out(0x40, 10);
        r.pit_out(0x40, 0);
        assert!(r.irq.get(0));
        // The board is late: OUT fell at tick 10 and rose at tick 11.
        r.advance_to(ticks_to_ns(15));
        assert!(!r.irq.get(0), "forced low to make an edge");
        assert_eq!(r.dev.next_deadline(), Some(ticks_to_ns(15)));
        r.advance_to(ticks_to_ns(15));
        assert!(r.irq.get(0));
        assert_eq!(r.dev.next_deadline(), Some(ticks_to_ns(20)));
    }

    #[test]
    fn mode3_square_wave_counts_by_two() {
        let mut r = rig();
        // BIOS: mode 3, count 0 (65536): 18.2 Hz.
        r.pit_out(0x43, 0x36);
        r.pit_out(0x40, 0);
        r.pit_out(0x40, 0);
        let (d, level) = r.step_irq0();
        assert_eq!(d, ticks_to_ns(1 + 32768));
        assert!(!level);
        let (d, level) = r.step_irq0();
        assert_eq!(d, ticks_to_ns(1 + 65536));
        assert!(level);
        r.now = ticks_to_ns(1 + 65536 + 10);
        r.pit_out(0x43, 0x00);
        let lo = r.pit_in(0x40);
        let hi = r.pit_in(0x40);
        assert_eq!(u16::from_le_bytes([lo, hi]), 65516);
        // Odd count 5: high for 3 ticks, low for 2.
        r.pit_out(0x43, 0x16); // channel 0, LSB only, mode 3
        r.pit_out(0x40, 5);
        let t0 = ns_to_ticks(r.now) + 1;
        let ch = &r.dev.channels[0];
        let outs: Vec<bool> = (t0..t0 + 10).map(|t| ch.out_at(t)).collect();
        assert_eq!(
            outs,
            [true, true, true, false, false, true, true, true, false, false]
        );
        let counts: Vec<u32> = (t0..t0 + 5).map(|t| ch.count_at(t)).collect();
        assert_eq!(counts, [4, 2, 0, 4, 2]);
    }

    #[test]
    fn bcd_counting() {
        let mut r = rig();
        r.pit_out(0x43, 0x31); // channel 0, LSB/MSB, mode 0, BCD
        r.pit_out(0x40, 0x00);
        r.pit_out(0x40, 0x10); // 1000 decimal
        r.now = ticks_to_ns(1 + 11);
        r.pit_out(0x43, 0x00);
        assert_eq!(r.pit_in(0x40), 0x89);
        assert_eq!(r.pit_in(0x40), 0x09);
        assert_eq!(r.step_irq0().0, ticks_to_ns(1 + 1000));
        r.now = ticks_to_ns(1 + 1001);
        r.pit_out(0x43, 0x00);
        assert_eq!(r.pit_in(0x40), 0x99);
        assert_eq!(r.pit_in(0x40), 0x99);
    }

    #[test]
    fn mode4_strobe_and_gate_triggered_modes_1_and_5() {
        let mut r = rig();
        r.pit_out(0x43, 0x38); // channel 0, mode 4
        r.pit_out(0x40, 5);
        r.pit_out(0x40, 0);
        assert_eq!(r.step_irq0(), (ticks_to_ns(6), false));
        assert_eq!(r.step_irq0(), (ticks_to_ns(7), true));
        assert_eq!(r.dev.next_deadline(), None);

        // Channel 2, mode 1: OUT low from the trigger until terminal count.
        let ch = &mut r.dev.channels[2];
        ch.program(0xB2 & 0x3F);
        ch.write(4, 100);
        ch.write(0, 100);
        assert!(ch.out_at(200), "no trigger yet");
        ch.set_gate(true, 200);
        assert!(ch.out_at(200));
        assert!(!ch.out_at(201));
        assert!(!ch.out_at(204));
        assert!(ch.out_at(205));
        // Retrigger before the end restarts the pulse.
        ch.set_gate(false, 300);
        ch.set_gate(true, 300);
        ch.set_gate(false, 302);
        ch.set_gate(true, 302);
        assert!(!ch.out_at(305));
        assert!(ch.out_at(307));

        // Channel 2, mode 5: one-clock strobe N clocks after the trigger.
        ch.set_gate(false, 400);
        ch.program(0xBA & 0x3F);
        ch.write(3, 400);
        ch.write(0, 400);
        ch.set_gate(true, 410);
        let strobe: Vec<u64> = (410..420).filter(|&t| !ch.out_at(t)).collect();
        assert_eq!(strobe, [414]);
    }

    #[test]
    fn gate_low_stops_mode2_and_holds_out_high() {
        let mut r = rig();
        let ch = &mut r.dev.channels[2];
        ch.set_gate(true, 0);
        ch.program(0xB4 & 0x3F); // mode 2, LSB/MSB
        ch.write(10, 0);
        ch.write(0, 0);
        assert!(!ch.out_at(10));
        ch.set_gate(false, 5);
        assert_eq!(ch.count_at(5), 6);
        assert_eq!(ch.count_at(50), 6);
        assert!(ch.out_at(10));
        assert_eq!(ch.next_change_after(5), None);
        ch.set_gate(true, 50); // reload on the next clock
        assert_eq!(ch.count_at(51), 10);
        assert_eq!(ch.next_change_after(51), Some(60));
    }

    #[test]
    fn new_count_in_mode2_takes_effect_at_end_of_cycle() {
        let mut r = rig();
        r.pit_out(0x43, 0x34);
        r.pit_out(0x40, 100);
        r.pit_out(0x40, 0);
        r.now = ticks_to_ns(30);
        r.pit_out(0x40, 50);
        r.pit_out(0x40, 0);
        assert_eq!(r.dev.next_deadline(), Some(ticks_to_ns(100)));
        assert_eq!(r.step_irq0(), (ticks_to_ns(100), false));
        assert_eq!(r.step_irq0(), (ticks_to_ns(101), true));
        assert_eq!(r.step_irq0(), (ticks_to_ns(150), false));
    }

    /// The board's loop as the module docs describe it: advance at each deadline (or every
    /// `late_ns` if the board is late), hand the lines to the PIC, take and EOI interrupts.
    fn run_with_pic(r: &mut Rig, until: Nanos, late_ns: Option<Nanos>) -> Vec<Nanos> {
        use super::super::pic::PicPair;
        let mut pic = PicPair::new();
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0),
        ] {
            pic.write_port(port, v);
        }
        pic.set_irq_levels(r.irq.levels());
        let mut taken = Vec::new();
        while let Some(d) = r.dev.next_deadline() {
            let at = match late_ns {
                Some(step) if d > r.now => (d.div_ceil(step) * step).max(d),
                _ => d,
            };
            if at > until {
                break;
            }
            r.advance_to(at);
            pic.set_irq_levels(r.irq.levels());
            if pic.interrupt_pending() {
                assert_eq!(pic.acknowledge(), 0x30);
                pic.write_port(0x20, 0x20);
                taken.push(r.now);
            }
        }
        taken
    }

    #[test]
    fn periodic_irq0_through_the_pic() {
        let mut r = rig();
        r.pit_out(0x43, 0x34);
        r.pit_out(0x40, (1193 & 0xFF) as u8);
        r.pit_out(0x40, (1193 >> 8) as u8);
        let taken = run_with_pic(&mut r, 10_000_000, None);
        assert_eq!(taken.len(), 10);
        assert_eq!(taken[0], ticks_to_ns(1 + 1193));
        assert_eq!(taken[9], ticks_to_ns(1 + 10 * 1193));
    }

    #[test]
    fn late_board_still_gets_one_edge_per_catch_up() {
        let mut r = rig();
        r.pit_out(0x43, 0x34);
        r.pit_out(0x40, (1193 & 0xFF) as u8);
        r.pit_out(0x40, (1193 >> 8) as u8);
        // The board only looks every 2.7 ms: each look after missed pulses yields one edge.
        let taken = run_with_pic(&mut r, 10_000_000, Some(2_700_000));
        assert_eq!(taken, [2_700_000, 5_400_000, 8_100_000]);
    }

    #[test]
    fn linux_oneshot_mode4_interrupts_once_per_programmed_delta() {
        let mut r = rig();
        // pit_set_oneshot, then pit_next_event(500) twice.
        r.pit_out(0x43, 0x38);
        r.pit_out(0x40, 0xF4);
        r.pit_out(0x40, 0x01);
        let taken = run_with_pic(&mut r, 5_000_000, None);
        assert_eq!(taken, [ticks_to_ns(1 + 500 + 1)]);
        let t = ns_to_ticks(r.now);
        r.pit_out(0x40, 0xF4);
        r.pit_out(0x40, 0x01);
        let taken = run_with_pic(&mut r, 10_000_000, None);
        assert_eq!(taken, [ticks_to_ns(t + 1 + 500 + 1)]);
    }

    #[test]
    fn any_guest_input_is_harmless() {
        let mut r = rig();
        for v in 0..=255u8 {
            for port in 0x40..=0x43 {
                r.now += 977;
                r.pit_out(port, v);
                r.inb(port);
                r.pit_out(port, v.wrapping_mul(37));
                if let Some(d) = r.dev.next_deadline() {
                    r.advance_to(d.max(r.now));
                }
            }
        }
        let (pit, mut ctx) = r.ctx();
        for size in 0..=8 {
            pit.write(At::new(0x40, 0xFFFF), size, u32::MAX, &mut ctx);
            pit.read(At::new(0x40, 0xFFFE), size, &mut ctx);
            pit.write(At::new(PORT_B_WINDOW, 0xFFFF), size, u32::MAX, &mut ctx);
            pit.read(At::new(PORT_B_WINDOW, 0xFFFE), size, &mut ctx);
        }
        ctx.now = u64::MAX;
        pit.advance(&mut ctx);
        let _ = pit.next_deadline();
    }
}
