//! The MC146818A real-time clock and CMOS NVRAM at 0x70-0x71, on IRQ8.
//!
//! The clock starts from a Unix time given at construction (the host clock, or a fixed time in
//! deterministic mode) and advances with virtual time: an update cycle happens every virtual
//! second (the first one second after construction, or 500 ms after the guest ends a divider
//! reset). Updates are applied lazily, when the guest touches the chip or the board calls
//! [`Device::advance`]; [`Device::next_deadline`] asks for a call only when an enabled interrupt
//! could assert IRQ8 (periodic, alarm, update-ended), so an idle RTC costs nothing.
//!
//! The time registers hold raw bytes as on the chip (BCD or binary, 12- or 24-hour as register B
//! said when they were written); an update decodes them in the current format, adds the elapsed
//! seconds on the calendar and encodes them back. Daylight-saving adjustment (DSE) is stored but
//! not applied, as on PCs that keep it off. The century byte (0x32) is advanced when the year
//! wraps.
//!
//! The board maps 0x70-0x71 (`bus.map(0x70, 2, RTC)`), gives the RAM size with
//! [`Rtc::set_memory_size`] and reads [`Rtc::nmi_masked`] before delivering an NMI.

use serde::{Deserialize, Serialize};

use super::{At, DevCtx, Device, Nanos, Timed};

/// Offset of the index port (0x70): bits 6-0 select a register, bit 7 masks NMI.
const PORT_INDEX: u16 = 0;
/// Offset of the data port (0x71).
const PORT_DATA: u16 = 1;
/// Index port bit 7: NMI disabled.
const INDEX_NMI_DISABLE: u8 = 0x80;
/// Index port bits 6-0: the register number.
const INDEX_MASK: u8 = 0x7F;

/// Seconds (0-59).
pub const REG_SECONDS: u8 = 0x00;
/// Seconds alarm.
pub const REG_SECONDS_ALARM: u8 = 0x01;
/// Minutes (0-59).
pub const REG_MINUTES: u8 = 0x02;
/// Minutes alarm.
pub const REG_MINUTES_ALARM: u8 = 0x03;
/// Hours (0-23, or 1-12 with bit 7 = PM).
pub const REG_HOURS: u8 = 0x04;
/// Hours alarm.
pub const REG_HOURS_ALARM: u8 = 0x05;
/// Day of the week (1-7, Sunday = 1).
pub const REG_DAY_OF_WEEK: u8 = 0x06;
/// Day of the month (1-31).
pub const REG_DAY_OF_MONTH: u8 = 0x07;
/// Month (1-12).
pub const REG_MONTH: u8 = 0x08;
/// Year within the century (0-99).
pub const REG_YEAR: u8 = 0x09;
/// Register A: UIP, divider, rate select.
pub const REG_A: u8 = 0x0A;
/// Register B: SET, interrupt enables, data mode, 24/12, DSE.
pub const REG_B: u8 = 0x0B;
/// Register C: interrupt flags (read-only, cleared by reading).
pub const REG_C: u8 = 0x0C;
/// Register D: valid RAM and time (read-only).
pub const REG_D: u8 = 0x0D;
/// Shutdown status byte (BIOS reset reason).
pub const NV_SHUTDOWN: u8 = 0x0F;
/// Floppy drive types (high nibble drive A, low nibble drive B; 0 = none).
pub const NV_FLOPPY_TYPES: u8 = 0x10;
/// Hard disk types (0 = none).
pub const NV_HD_TYPES: u8 = 0x12;
/// Equipment byte (bit 1 FPU present, bits 5-4 display, bits 7-6 floppy count).
pub const NV_EQUIPMENT: u8 = 0x14;
/// Base memory in KiB, low byte.
pub const NV_BASE_MEM_LO: u8 = 0x15;
/// Base memory in KiB, high byte.
pub const NV_BASE_MEM_HI: u8 = 0x16;
/// Extended memory above 1 MiB in KiB, low byte.
pub const NV_EXT_MEM_LO: u8 = 0x17;
/// Extended memory above 1 MiB in KiB, high byte.
pub const NV_EXT_MEM_HI: u8 = 0x18;
/// First byte covered by the standard checksum.
pub const NV_CHECKSUM_FIRST: u8 = 0x10;
/// Last byte covered by the standard checksum.
pub const NV_CHECKSUM_LAST: u8 = 0x2D;
/// Checksum of 0x10-0x2D, high byte.
pub const NV_CHECKSUM_HI: u8 = 0x2E;
/// Checksum of 0x10-0x2D, low byte.
pub const NV_CHECKSUM_LO: u8 = 0x2F;
/// Extended memory above 1 MiB in KiB (as found by POST), low byte.
pub const NV_EXT_MEM2_LO: u8 = 0x30;
/// Extended memory above 1 MiB in KiB (as found by POST), high byte.
pub const NV_EXT_MEM2_HI: u8 = 0x31;
/// Century (BCD in BCD mode).
pub const NV_CENTURY: u8 = 0x32;
/// Memory above 16 MiB in 64 KiB blocks, low byte.
pub const NV_HIGH_MEM_LO: u8 = 0x34;
/// Memory above 16 MiB in 64 KiB blocks, high byte.
pub const NV_HIGH_MEM_HI: u8 = 0x35;

/// Register A bit 7: update in progress (read-only).
const A_UIP: u8 = 0x80;
/// Register A bits 6-4: divider control.
const A_DV_MASK: u8 = 0x70;
/// Divider value for the 32.768 kHz time base (normal operation).
const A_DV_32K: u8 = 0x20;
/// Divider values 11x: divider chain held in reset.
const A_DV_RESET: u8 = 0x60;
/// Register A bits 3-0: periodic interrupt rate select.
const A_RS_MASK: u8 = 0x0F;
/// Register B bit 7: SET (updates inhibited while the guest sets the clock).
const B_SET: u8 = 0x80;
/// Register B bit 6: periodic interrupt enable.
const B_PIE: u8 = 0x40;
/// Register B bit 5: alarm interrupt enable.
const B_AIE: u8 = 0x20;
/// Register B bit 4: update-ended interrupt enable.
const B_UIE: u8 = 0x10;
/// Register B bit 3: square-wave output enable (no pin here; stored).
const B_SQWE: u8 = 0x08;
/// Register B bit 2: data mode, binary (1) or BCD (0).
const B_DM_BINARY: u8 = 0x04;
/// Register B bit 1: 24-hour (1) or 12-hour (0) mode.
const B_24H: u8 = 0x02;
/// Register B bit 0: daylight saving enable (stored, not applied).
const B_DSE: u8 = 0x01;
/// Register C bit 7: an enabled interrupt is asserted (IRQ8 high).
const C_IRQF: u8 = 0x80;
/// Register C bit 6: periodic interrupt flag.
const C_PF: u8 = 0x40;
/// Register C bit 5: alarm flag.
const C_AF: u8 = 0x20;
/// Register C bit 4: update-ended flag.
const C_UF: u8 = 0x10;
/// Register C flags that have an enable in register B at the same bit.
const C_FLAGS: u8 = C_PF | C_AF | C_UF;
/// Register D bit 7: valid RAM and time (the battery is good).
const D_VRT: u8 = 0x80;
/// Hours bit 7 in 12-hour mode: PM.
const HOUR_PM: u8 = 0x80;
/// Alarm values 0xC0-0xFF match any value.
const ALARM_DONT_CARE: u8 = 0xC0;
/// The ISA line the RTC interrupts on.
const IRQ: u8 = 8;

/// Nanoseconds per second.
const NS_PER_SEC: u64 = 1_000_000_000;
/// UIP is set this long before each update (8 cycles of the 32.768 kHz time base).
pub const UIP_LEAD_NS: Nanos = 244_141;
/// After a divider reset ends, the first update comes this much later.
const FIRST_UPDATE_AFTER_RESET_NS: Nanos = 500_000_000;
/// The time base, in Hz.
const TIME_BASE_HZ: u64 = 32_768;
/// Updates caught up one by one (for alarm matching) after a long gap; older ones in one jump.
const MAX_STEPPED_SECONDS: u64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (any month/day, out-of-range days roll).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let m = i64::from(month.clamp(1, 12));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A calendar time, broken down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl DateTime {
    fn from_unix(t: i64) -> Self {
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// The RTC and its 128 bytes of CMOS RAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtc {
    /// Registers 0x00-0x0D and NVRAM 0x0E-0x7F (128 bytes; the time registers as last updated).
    pub cmos: Vec<u8>,
    /// The register selected through port 0x70.
    pub index: u8,
    /// Port 0x70 bit 7: NMI masked.
    pub nmi_masked: bool,
    /// Virtual time of the next update cycle.
    pub next_update: Nanos,
    /// Virtual time the divider chain last left reset (phase of the periodic interrupt).
    pub divider_origin: Nanos,
    /// Time-base cycles since `divider_origin` already folded into the periodic flag.
    pub periodic_seen: u64,
    /// The virtual time the state has been brought up to.
    pub synced: Nanos,
}

impl Rtc {
    /// An RTC showing `unix_seconds` (UTC) now, in BCD 24-hour mode, with PC defaults in NVRAM.
    pub fn new(unix_seconds: i64) -> Self {
        let mut rtc = Rtc {
            cmos: vec![0; 128],
            index: 0,
            nmi_masked: false,
            next_update: NS_PER_SEC,
            divider_origin: 0,
            periodic_seen: 0,
            synced: 0,
        };
        rtc.set(REG_A, A_DV_32K | 0x06); // 1024 Hz periodic rate, as the BIOS leaves it
        rtc.set(REG_B, B_24H);
        rtc.set(REG_D, D_VRT);
        rtc.set_time(unix_seconds);
        rtc.set(NV_SHUTDOWN, 0);
        rtc.set(NV_FLOPPY_TYPES, 0);
        rtc.set(NV_HD_TYPES, 0);
        rtc.set(NV_EQUIPMENT, 0x02); // FPU present, VGA, no floppies
        rtc.set(NV_BASE_MEM_LO, 0x80); // 640 KiB
        rtc.set(NV_BASE_MEM_HI, 0x02);
        rtc.update_checksum();
        rtc
    }

    fn get(&self, i: u8) -> u8 {
        self.cmos.get(usize::from(i)).copied().unwrap_or(0xFF)
    }

    fn set(&mut self, i: u8, v: u8) {
        if let Some(b) = self.cmos.get_mut(usize::from(i)) {
            *b = v;
        }
    }

    /// Whether port 0x70 bit 7 masks NMI.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// Write an NVRAM byte on the board's behalf (keeps the checksum right).
    pub fn nvram_write(&mut self, index: u8, value: u8) {
        if index > REG_D {
            self.set(index & INDEX_MASK, value);
            self.update_checksum();
        }
    }

    /// Recompute the checksum at 0x2E/0x2F over 0x10-0x2D.
    pub fn update_checksum(&mut self) {
        let sum: u16 = (NV_CHECKSUM_FIRST..=NV_CHECKSUM_LAST)
            .map(|i| u16::from(self.get(i)))
            .sum();
        let [lo, hi] = sum.to_le_bytes();
        self.set(NV_CHECKSUM_HI, hi);
        self.set(NV_CHECKSUM_LO, lo);
    }

    /// Record the guest RAM size: base, extended (KiB above 1 MiB, up to 63 MiB) and high
    /// (64 KiB blocks above 16 MiB) memory.
    pub fn set_memory_size(&mut self, bytes: u64) {
        let ext_kib = (bytes / 1024).saturating_sub(1024).min(0xFC00) as u16;
        let high = (bytes.saturating_sub(16 << 20) / 65536).min(0xFFFF) as u16;
        let [lo, hi] = ext_kib.to_le_bytes();
        self.set(NV_EXT_MEM_LO, lo);
        self.set(NV_EXT_MEM_HI, hi);
        self.set(NV_EXT_MEM2_LO, lo);
        self.set(NV_EXT_MEM2_HI, hi);
        let [lo, hi] = high.to_le_bytes();
        self.set(NV_HIGH_MEM_LO, lo);
        self.set(NV_HIGH_MEM_HI, hi);
        self.update_checksum();
    }

    /// Set CMOS byte `index` (0x0E and up: the NVRAM a BIOS reads its settings from) as the
    /// host configures the machine; the clock and control registers below are left alone.
    pub fn set_nvram(&mut self, index: u8, value: u8) {
        if index >= 0x0E {
            self.set(index, value);
        }
    }

    /// CMOS byte `index` as it is stored (the host's view, no side effects).
    pub fn nvram(&self, index: u8) -> u8 {
        self.get(index)
    }

    /// The diskette drives' types (register 0x10: A: in the high nibble, B: in the low; 4 is
    /// 1.44 MB, 0 none) and the equipment byte's diskette bits, as a BIOS set them up.
    pub fn set_floppy_types(&mut self, a: u8, b: u8) {
        self.set(NV_FLOPPY_TYPES, (a & 0xF) << 4 | (b & 0xF));
        let drives = u8::from(a != 0) + u8::from(b != 0);
        let equipment = self.get(NV_EQUIPMENT) & 0x3E;
        let bits = if drives == 0 {
            0
        } else {
            (drives - 1) << 6 | 1
        };
        self.set(NV_EQUIPMENT, equipment | bits);
        self.update_checksum();
    }

    fn binary(&self) -> bool {
        self.get(REG_B) & B_DM_BINARY != 0
    }

    fn encode(&self, v: u32) -> u8 {
        let v = (v % 100) as u8;
        if self.binary() {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.binary() {
            u32::from(v)
        } else {
            u32::from(v >> 4) * 10 + u32::from(v & 0xF)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.get(REG_B) & B_24H != 0 {
            self.encode(hour)
        } else {
            let h12 = if hour.is_multiple_of(12) {
                12
            } else {
                hour % 12
            };
            let pm = if hour >= 12 { HOUR_PM } else { 0 };
            self.encode(h12) | pm
        }
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.get(REG_B) & B_24H != 0 {
            self.decode(v)
        } else {
            let pm = if v & HOUR_PM != 0 { 12 } else { 0 };
            self.decode(v & !HOUR_PM) % 12 + pm
        }
    }

    /// The time the registers show.
    fn read_time(&self) -> DateTime {
        let century = i64::from(self.decode(self.get(NV_CENTURY)));
        DateTime {
            year: century * 100 + i64::from(self.decode(self.get(REG_YEAR))),
            month: self.decode(self.get(REG_MONTH)),
            day: self.decode(self.get(REG_DAY_OF_MONTH)),
            hour: self.decode_hour(self.get(REG_HOURS)),
            minute: self.decode(self.get(REG_MINUTES)),
            second: self.decode(self.get(REG_SECONDS)),
        }
    }

    fn write_time(&mut self, t: &DateTime) {
        let year = t.year.rem_euclid(10_000) as u32;
        self.set(REG_SECONDS, self.encode(t.second));
        self.set(REG_MINUTES, self.encode(t.minute));
        self.set(REG_HOURS, self.encode_hour(t.hour));
        self.set(REG_DAY_OF_MONTH, self.encode(t.day));
        self.set(REG_MONTH, self.encode(t.month));
        self.set(REG_YEAR, self.encode(year % 100));
        self.set(NV_CENTURY, self.encode(year / 100));
    }

    /// Set the registers to the Unix time `t`.
    pub fn set_time(&mut self, t: i64) {
        let dt = DateTime::from_unix(t);
        self.write_time(&dt);
        let dow = t.div_euclid(86_400).wrapping_add(4).rem_euclid(7) + 1;
        self.set(REG_DAY_OF_WEEK, dow as u8);
    }

    /// The time the registers show, as Unix seconds.
    pub fn unix_time(&self) -> i64 {
        self.read_time().to_unix()
    }

    /// Advance the time registers by `secs` seconds (an update cycle, or several).
    fn add_seconds(&mut self, secs: u64) {
        if secs == 0 {
            return;
        }
        let before = self.read_time();
        let t = before
            .to_unix()
            .saturating_add(secs.min(i64::MAX as u64) as i64);
        let after = DateTime::from_unix(t);
        self.write_time(&after);
        let days = days_from_civil(after.year, after.month, after.day)
            - days_from_civil(before.year, before.month, before.day);
        let dow = i64::from(self.decode(self.get(REG_DAY_OF_WEEK)));
        let dow = (dow - 1 + days).rem_euclid(7) + 1;
        self.set(REG_DAY_OF_WEEK, self.encode(dow as u32));
    }

    fn alarm_matches(&self) -> bool {
        [
            (REG_SECONDS_ALARM, REG_SECONDS),
            (REG_MINUTES_ALARM, REG_MINUTES),
            (REG_HOURS_ALARM, REG_HOURS),
        ]
        .iter()
        .all(|&(a, r)| self.get(a) >= ALARM_DONT_CARE || self.get(a) == self.get(r))
    }

    /// The divider chain is running (not held in reset).
    fn running(&self) -> bool {
        let dv = self.get(REG_A) & A_DV_MASK;
        dv & A_DV_RESET != A_DV_RESET
    }

    /// Periodic interrupt period in time-base cycles (0 = off).
    fn periodic_cycles(&self) -> u64 {
        match self.get(REG_A) & A_RS_MASK {
            0 => 0,
            1 => 128,
            2 => 256,
            rs => 1 << (rs - 1),
        }
    }

    /// Time-base cycles elapsed since the divider started, at `now`.
    fn cycles_at(&self, now: Nanos) -> u64 {
        let ns = now.saturating_sub(self.divider_origin);
        (u128::from(ns) * u128::from(TIME_BASE_HZ) / u128::from(NS_PER_SEC)) as u64
    }

    /// The virtual time of time-base cycle `c`.
    fn time_of_cycle(&self, c: u64) -> Nanos {
        let ns = (u128::from(c) * u128::from(NS_PER_SEC)).div_ceil(u128::from(TIME_BASE_HZ));
        self.divider_origin
            .saturating_add(ns.min(u128::from(u64::MAX)) as u64)
    }

    /// Run update cycles and the periodic divider up to `now`, setting flags.
    fn catch_up(&mut self, now: Nanos) {
        if now < self.synced {
            return;
        }
        self.synced = now;
        if !self.running() {
            return;
        }
        let cycles = self.cycles_at(now);
        let p = self.periodic_cycles();
        if p != 0 && cycles / p > self.periodic_seen / p {
            self.set(REG_C, self.get(REG_C) | C_PF);
        }
        self.periodic_seen = cycles;
        if now < self.next_update {
            return;
        }
        let n = (now - self.next_update) / NS_PER_SEC + 1;
        self.next_update = self
            .next_update
            .saturating_add(n.saturating_mul(NS_PER_SEC));
        if self.get(REG_B) & B_SET != 0 {
            return;
        }
        // Step the last updates one by one so an alarm among them is seen.
        let mut stepped = if self.get(REG_C) & C_AF != 0 {
            0
        } else {
            n.min(MAX_STEPPED_SECONDS)
        };
        self.add_seconds(n - stepped);
        let mut c = self.get(REG_C) | C_UF;
        while stepped > 0 {
            self.add_seconds(1);
            stepped -= 1;
            if self.alarm_matches() {
                c |= C_AF;
                break;
            }
        }
        self.add_seconds(stepped);
        self.set(REG_C, c);
    }

    /// Recompute IRQF and drive IRQ8.
    fn update_irq(&mut self, ctx: &mut DevCtx) {
        let c = self.get(REG_C) & C_FLAGS;
        let irqf = c & self.get(REG_B) & C_FLAGS != 0;
        self.set(REG_C, if irqf { c | C_IRQF } else { c });
        ctx.irq.set(IRQ, irqf);
    }

    /// Register A as read: UIP during the 244 us before an update.
    fn read_a(&self, now: Nanos) -> u8 {
        let uip = self.running()
            && self.get(REG_B) & B_SET == 0
            && now >= self.next_update.saturating_sub(UIP_LEAD_NS);
        (self.get(REG_A) & !A_UIP) | if uip { A_UIP } else { 0 }
    }

    fn write_data(&mut self, v: u8, now: Nanos) {
        match self.index {
            // Guest sets the clock or an alarm.
            REG_SECONDS..=REG_YEAR => self.set(self.index, v),
            // Guest sets the divider and the periodic rate.
            REG_A => {
                let was_running = self.running();
                self.set(REG_A, v & !A_UIP);
                if self.running() && !was_running {
                    self.divider_origin = now;
                    self.next_update = now.saturating_add(FIRST_UPDATE_AFTER_RESET_NS);
                }
                self.periodic_seen = self.cycles_at(now);
            }
            // Guest sets modes and interrupt enables (SET also clears UIE).
            REG_B => {
                let v = if v & B_SET != 0 { v & !B_UIE } else { v };
                self.set(
                    REG_B,
                    v & (B_SET | B_PIE | B_AIE | B_UIE | B_SQWE | B_DM_BINARY | B_24H | B_DSE),
                );
            }
            // Registers C and D are read-only.
            REG_C | REG_D => {}
            // Guest writes NVRAM (the BIOS keeps its checksum itself).
            i => self.set(i, v),
        }
    }

    fn read_data(&mut self, now: Nanos, ctx: &mut DevCtx) -> u8 {
        match self.index {
            // Guest polls UIP before reading the time.
            REG_A => self.read_a(now),
            // Guest acknowledges the interrupt: reading C returns the flags and clears them.
            REG_C => {
                let c = self.get(REG_C);
                self.set(REG_C, 0);
                ctx.irq.set(IRQ, false);
                c
            }
            // Guest checks the battery.
            REG_D => D_VRT,
            // Guest reads the time, an alarm, register B or NVRAM.
            i => self.get(i),
        }
    }
}

impl Device for Rtc {
    fn read(&mut self, at: At, _size: u8, ctx: &mut DevCtx) -> u32 {
        let offset = at.offset as u16;
        self.catch_up(ctx.now);
        self.update_irq(ctx);
        match offset {
            // Guest reads the index back (write-only on some chipsets; harmless here).
            PORT_INDEX => {
                self.index
                    | if self.nmi_masked {
                        INDEX_NMI_DISABLE
                    } else {
                        0
                    }
            }
            // Guest reads the selected register.
            PORT_DATA => self.read_data(ctx.now, ctx),
            _ => 0xFF,
        }
        .into()
    }

    fn write(&mut self, at: At, _size: u8, value: u32, ctx: &mut DevCtx) {
        let offset = at.offset as u16;
        self.catch_up(ctx.now);
        let v = value as u8;
        match offset {
            // Guest selects a register and masks or unmasks NMI.
            PORT_INDEX => {
                self.index = v & INDEX_MASK;
                self.nmi_masked = v & INDEX_NMI_DISABLE != 0;
            }
            // Guest writes the selected register.
            PORT_DATA => self.write_data(v, ctx.now),
            _ => {}
        }
        self.update_irq(ctx);
    }
}

impl Timed for Rtc {
    fn next_deadline(&self) -> Option<Nanos> {
        let b = self.get(REG_B);
        if self.get(REG_C) & C_IRQF != 0 || !self.running() {
            return None;
        }
        let update = (b & (B_UIE | B_AIE) != 0 && b & B_SET == 0).then_some(self.next_update);
        let p = self.periodic_cycles();
        let periodic = (b & B_PIE != 0 && p != 0)
            .then(|| self.time_of_cycle((self.periodic_seen / p + 1).saturating_mul(p)));
        match (update, periodic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn advance(&mut self, ctx: &mut DevCtx) {
        self.catch_up(ctx.now);
        self.update_irq(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const T0: i64 = 1_709_251_198;

    type Rig = crate::dev::testing::Rig<Rtc>;

    fn rig() -> Rig {
        Rig::new(Rtc::new(T0), 0x70)
    }

    impl Rig {
        /// Read CMOS register `reg` (index to port 0x70, data from 0x71).
        fn read_reg(&mut self, reg: u8) -> u8 {
            self.outb(0, reg);
            self.inb(1)
        }
        /// Write CMOS register `reg`.
        fn write_reg(&mut self, reg: u8, v: u8) {
            self.outb(0, reg);
            self.outb(1, v);
        }
        fn time(&mut self) -> [u8; 7] {
            [0, 2, 4, 6, 7, 8, 9].map(|r| self.read_reg(r))
        }
    }

    #[test]
    fn calendar_conversions() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(DateTime::from_unix(T0).to_unix(), T0);
        assert_eq!(
            DateTime::from_unix(T0),
            DateTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23,
                minute: 59,
                second: 58
            }
        );
        for d in [-800_000i64, -1, 0, 59, 60, 11_016, 2_932_896] {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn reads_time_in_bcd_and_advances_across_the_leap_day() {
        let mut r = rig();
        assert_eq!(r.time(), [0x58, 0x59, 0x23, 5, 0x29, 0x02, 0x24]);
        assert_eq!(r.read_reg(NV_CENTURY), 0x20);
        r.now = 2 * NS_PER_SEC;
        assert_eq!(r.time(), [0x00, 0x00, 0x00, 6, 0x01, 0x03, 0x24]);
        assert_eq!(r.dev.unix_time(), T0 + 2);
        // Whole days of virtual time later.
        r.now = (2 + 86_400 * 3) * NS_PER_SEC;
        assert_eq!(r.time(), [0x00, 0x00, 0x00, 2, 0x04, 0x03, 0x24]);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut r = rig();
        // The guest switches to binary 12-hour mode and sets 11:59:59 PM, Dec 31 1999.
        r.write_reg(REG_B, B_SET | B_DM_BINARY);
        r.write_reg(NV_CENTURY, 19);
        for (reg, v) in [
            (0, 59),
            (2, 59),
            (4, 11 | 0x80),
            (6, 6),
            (7, 31),
            (8, 12),
            (9, 99),
        ] {
            r.write_reg(reg, v);
        }
        r.now = 5 * NS_PER_SEC;
        assert_eq!(r.read_reg(REG_SECONDS), 59, "SET holds the clock");
        r.write_reg(REG_B, B_DM_BINARY);
        r.now = 6 * NS_PER_SEC;
        assert_eq!(r.time(), [0, 0, 12, 7, 1, 1, 0]); // 12 AM, Jan 1 2000
        assert_eq!(r.read_reg(NV_CENTURY), 20);
        r.now = (6 + 13 * 3600) * NS_PER_SEC;
        assert_eq!(r.read_reg(REG_HOURS), 1 | 0x80); // 1 PM
                                                     // BCD 12-hour: 12 PM is 0x92.
        r.write_reg(REG_B, 0);
        r.write_reg(REG_HOURS, 0x92);
        assert_eq!(r.dev.read_time().hour, 12);
        r.write_reg(REG_HOURS, 0x12);
        assert_eq!(r.dev.read_time().hour, 0);
    }

    #[test]
    fn uip_is_set_for_244us_before_each_update() {
        let mut r = rig();
        r.now = NS_PER_SEC - UIP_LEAD_NS - 1;
        assert_eq!(r.read_reg(REG_A), 0x26);
        r.now = NS_PER_SEC - UIP_LEAD_NS;
        assert_eq!(r.read_reg(REG_A), 0x26 | A_UIP);
        assert_eq!(r.read_reg(REG_SECONDS), 0x58);
        r.now = NS_PER_SEC;
        assert_eq!(r.read_reg(REG_A), 0x26);
        assert_eq!(r.read_reg(REG_SECONDS), 0x59);
        // SET inhibits updates: no UIP.
        r.write_reg(REG_B, B_SET | B_24H);
        r.now = 2 * NS_PER_SEC - 1000;
        assert_eq!(r.read_reg(REG_A), 0x26);
    }

    #[test]
    fn periodic_interrupt_at_the_register_a_rate() {
        let mut r = rig();
        // Linux rtc-cmos: 64 Hz (RS = 10), PIE on.
        r.write_reg(REG_A, A_DV_32K | 10);
        r.write_reg(REG_B, B_24H | B_PIE);
        let period = NS_PER_SEC / 64;
        let d = r.dev.next_deadline().unwrap();
        assert_eq!(d, period);
        r.advance_to(d - 1);
        assert!(!r.irq.get(8));
        r.advance_to(d);
        assert!(r.irq.get(8));
        assert_eq!(r.dev.next_deadline(), None, "nothing new until C is read");
        assert_eq!(r.read_reg(REG_C), C_IRQF | C_PF);
        assert!(!r.irq.get(8));
        assert_eq!(r.read_reg(REG_C), 0);
        assert_eq!(r.dev.next_deadline(), Some(2 * period));
        // 8192 Hz (RS = 3): 122.07 us.
        r.write_reg(REG_A, A_DV_32K | 3);
        let d = r.dev.next_deadline().unwrap();
        let prev = r.dev.time_of_cycle(r.dev.periodic_seen / 4 * 4);
        assert!((122_070..=122_071).contains(&(d - prev)));
        // PF is set even without PIE, but IRQ8 stays low.
        r.write_reg(REG_B, B_24H);
        r.now += NS_PER_SEC / 100;
        assert_eq!(r.read_reg(REG_C), C_PF);
        assert!(!r.irq.get(8));
    }

    #[test]
    fn update_ended_interrupt_each_second() {
        let mut r = rig();
        r.now = 300_000_000;
        r.write_reg(REG_B, B_24H | B_UIE);
        assert_eq!(r.dev.next_deadline(), Some(NS_PER_SEC));
        r.advance_to(NS_PER_SEC);
        assert!(r.irq.get(8));
        // PF too: the 1024 Hz periodic flag runs whether or not PIE is set.
        assert_eq!(r.read_reg(REG_C), C_IRQF | C_PF | C_UF);
        assert_eq!(r.read_reg(REG_SECONDS), 0x59);
        assert_eq!(r.dev.next_deadline(), Some(2 * NS_PER_SEC));
        r.advance_to(2 * NS_PER_SEC);
        // 00:00:00 also matches the power-on alarm registers (all zero): AF.
        assert_eq!(r.read_reg(REG_C), C_IRQF | C_PF | C_AF | C_UF);
        assert_eq!(r.read_reg(REG_SECONDS), 0x00);
        // Setting SET clears UIE.
        r.write_reg(REG_B, B_SET | B_24H | B_UIE);
        assert_eq!(r.read_reg(REG_B), B_SET | B_24H);
        assert_eq!(r.dev.next_deadline(), None);
    }

    #[test]
    fn alarm_with_dont_care_fields() {
        let mut r = rig();
        // Alarm at hh:00:05 for any hour.
        r.write_reg(REG_SECONDS_ALARM, 0x05);
        r.write_reg(REG_MINUTES_ALARM, 0x00);
        r.write_reg(REG_HOURS_ALARM, 0xFF);
        r.write_reg(REG_B, B_24H | B_AIE);
        let mut t = 0;
        while !r.irq.get(8) {
            t = r.dev.next_deadline().unwrap();
            r.advance_to(t);
        }
        assert_eq!(t, 7 * NS_PER_SEC); // 23:59:58 + 7 s = 00:00:05
        assert_eq!(r.read_reg(REG_C), C_IRQF | C_PF | C_AF | C_UF);
        assert_eq!(r.time()[..3], [0x05, 0x00, 0x00]);
        // Without AIE the flag is still set, found by a lazy read an hour later.
        r.write_reg(REG_B, B_24H);
        r.now = 7 * NS_PER_SEC + 3600 * NS_PER_SEC;
        assert_eq!(r.read_reg(REG_C), C_PF | C_AF | C_UF);
        assert!(!r.irq.get(8));
        // An alarm that never matches.
        r.write_reg(REG_SECONDS_ALARM, 0x61);
        r.write_reg(REG_A, A_DV_32K); // periodic rate off: no PF
        r.now += 10 * NS_PER_SEC;
        assert_eq!(r.read_reg(REG_C), C_UF);
    }

    #[test]
    fn divider_reset_stops_the_clock() {
        let mut r = rig();
        r.write_reg(REG_A, 0x70);
        r.now = 10 * NS_PER_SEC;
        assert_eq!(r.read_reg(REG_SECONDS), 0x58);
        r.write_reg(REG_A, 0x26);
        r.now += 499_999_999;
        assert_eq!(r.read_reg(REG_SECONDS), 0x58);
        r.now += 1;
        assert_eq!(r.read_reg(REG_SECONDS), 0x59);
    }

    #[test]
    fn nmi_mask_and_register_d() {
        let mut r = rig();
        r.outb(0, 0x8D);
        assert!(r.dev.nmi_masked());
        assert_eq!(r.inb(1), 0x80);
        r.outb(0, 0x0D);
        assert!(!r.dev.nmi_masked());
        r.outb(1, 0);
        assert_eq!(r.inb(1), 0x80);
    }

    #[test]
    fn nvram_memory_size_and_checksum() {
        let mut r = rig();
        r.dev.set_memory_size(128 << 20);
        assert_eq!(r.read_reg(NV_BASE_MEM_LO), 0x80);
        assert_eq!(r.read_reg(NV_BASE_MEM_HI), 0x02);
        assert_eq!([r.read_reg(0x17), r.read_reg(0x18)], [0x00, 0xFC]);
        assert_eq!([r.read_reg(0x30), r.read_reg(0x31)], [0x00, 0xFC]);
        assert_eq!([r.read_reg(0x34), r.read_reg(0x35)], [0x00, 0x07]); // 112 MiB / 64 KiB
        r.dev.set_memory_size(8 << 20);
        assert_eq!([r.read_reg(0x17), r.read_reg(0x18)], [0x00, 0x1C]); // 7168 KiB
        assert_eq!([r.read_reg(0x34), r.read_reg(0x35)], [0, 0]);
        let sum: u16 = (0x10..=0x2D).map(|i| u16::from(r.read_reg(i))).sum();
        assert_eq!(
            u16::from_be_bytes([r.read_reg(0x2E), r.read_reg(0x2F)]),
            sum
        );
        assert_eq!(sum, 0x02 + 0x80 + 0x02 + 0x1C);
        assert_eq!(r.read_reg(NV_SHUTDOWN), 0);
        assert_eq!(r.read_reg(NV_FLOPPY_TYPES), 0);
        r.write_reg(0x50, 0xAB);
        assert_eq!(r.read_reg(0x50), 0xAB);
    }

    #[test]
    fn any_guest_input_is_harmless() {
        let mut r = rig();
        for reg in 0..=255u8 {
            for v in [0u8, 0x0F, 0x55, 0x7F, 0x80, 0x99, 0xC0, 0xFF] {
                r.now += 7_777_777;
                r.write_reg(reg, v);
                r.read_reg(reg);
                r.read_reg(REG_SECONDS);
                if let Some(d) = r.dev.next_deadline() {
                    r.advance_to(d.max(r.now));
                }
            }
        }
        r.dev.cmos.truncate(3);
        r.read_reg(0x50);
        r.write_reg(0x50, 1);
        r.now = u64::MAX;
        r.read_reg(REG_C);
        let mut far = Rtc::new(i64::MAX);
        far.set_memory_size(u64::MAX);
        let _ = Rtc::new(i64::MIN).unix_time();
    }
}
