//! The 80-bit extended floating-point format and exact IEEE-754 arithmetic on it, as the x87
//! performs it: rounding control, precision control (significand rounded to 24/53/64 bits
//! while the exponent keeps the extended range), the six exception flags and the C1
//! round-up indication.
//!
//! Every operation takes a [`Ctx`] holding the control word and accumulating status bits in
//! status-word positions, so the FPU can OR them into its status word directly.
//! Intermediate results are exact `u128` significands with a sticky bit, rounded once by
//! [`Ctx::round`]; checked bit for bit against the host's x87 (see `testgen/gen.c`).

use serde::{Deserialize, Serialize};

/// Invalid operation (status and control word bit 0).
pub const IE: u16 = 1 << 0;
/// Denormal operand.
pub const DE: u16 = 1 << 1;
/// Zero divide.
pub const ZE: u16 = 1 << 2;
/// Overflow.
pub const OE: u16 = 1 << 3;
/// Underflow.
pub const UE: u16 = 1 << 4;
/// Precision (inexact result).
pub const PE: u16 = 1 << 5;
/// All six exception bits.
pub const EXC_MASK: u16 = 0x3F;
/// Condition code C0.
pub const C0: u16 = 1 << 8;
/// Condition code C1 (round-up indication; stack overflow vs underflow).
pub const C1: u16 = 1 << 9;
/// Condition code C2.
pub const C2: u16 = 1 << 10;
/// Condition code C3.
pub const C3: u16 = 1 << 14;

/// Control word: precision-control field (bits 8-9).
pub const CW_PC_SHIFT: u16 = 8;
/// Control word: rounding-control field (bits 10-11).
pub const CW_RC_SHIFT: u16 = 10;
/// Rounding control: to nearest, ties to even.
pub const RC_NEAREST: u16 = 0;
/// Rounding control: toward -infinity.
pub const RC_DOWN: u16 = 1;
/// Rounding control: toward +infinity.
pub const RC_UP: u16 = 2;
/// Rounding control: toward zero.
pub const RC_ZERO: u16 = 3;

/// Exponent bias of the extended format.
pub const BIAS: i32 = 16383;
/// Biased exponent of infinities and NaNs.
pub const EXP_MAX: u16 = 0x7FFF;
/// Explicit integer bit of the significand.
pub const INT_BIT: u64 = 1 << 63;
/// Quiet bit of a NaN significand.
pub const QUIET_BIT: u64 = 1 << 62;
/// Exponent adjustment applied to results when overflow/underflow is unmasked.
const WRAP_BIAS: i32 = 24576;

/// An 80-bit extended value: sign, 15-bit biased exponent, 64-bit significand with an explicit
/// integer bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct F80 {
    pub sign: bool,
    pub exp: u16,
    pub mant: u64,
}

/// The classes FXAM and the tag word distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Zero,
    Normal,
    Denormal,
    Infinity,
    QNaN,
    SNaN,
    /// Unnormals, pseudo-NaNs and pseudo-infinities: invalid operands since the 387.
    Unsupported,
}

/// The result of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Less,
    Equal,
    Greater,
    Unordered,
}

impl F80 {
    pub const ZERO: F80 = F80::new(false, 0, 0);
    pub const ONE: F80 = F80::new(false, 0x3FFF, INT_BIT);
    /// The real indefinite: the default NaN the x87 returns for invalid operations.
    pub const INDEFINITE: F80 = F80::new(true, EXP_MAX, 0xC000_0000_0000_0000);
    pub const INFINITY: F80 = F80::new(false, EXP_MAX, INT_BIT);

    pub const fn new(sign: bool, exp: u16, mant: u64) -> F80 {
        F80 { sign, exp, mant }
    }

    /// From the 10-byte memory image (little endian: significand, then sign/exponent).
    pub fn from_bytes(b: [u8; 10]) -> F80 {
        let mut m = [0u8; 8];
        m.copy_from_slice(&b[..8]);
        let se = u16::from_le_bytes([b[8], b[9]]);
        F80::new(se & 0x8000 != 0, se & 0x7FFF, u64::from_le_bytes(m))
    }

    /// The 10-byte memory image.
    pub fn to_bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&self.mant.to_le_bytes());
        b[8..].copy_from_slice(&self.se().to_le_bytes());
        b
    }

    /// The sign/exponent word.
    pub fn se(self) -> u16 {
        (self.sign as u16) << 15 | self.exp
    }

    pub const fn zero(sign: bool) -> F80 {
        F80::new(sign, 0, 0)
    }

    pub const fn inf(sign: bool) -> F80 {
        F80::new(sign, EXP_MAX, INT_BIT)
    }

    pub fn chs(self) -> F80 {
        F80 {
            sign: !self.sign,
            ..self
        }
    }

    pub fn abs(self) -> F80 {
        F80 {
            sign: false,
            ..self
        }
    }

    pub fn class(self) -> Class {
        let int = self.mant & INT_BIT != 0;
        match self.exp {
            0 if self.mant == 0 => Class::Zero,
            0 => Class::Denormal,
            EXP_MAX if !int => Class::Unsupported,
            EXP_MAX if self.mant << 1 == 0 => Class::Infinity,
            EXP_MAX if self.mant & QUIET_BIT != 0 => Class::QNaN,
            EXP_MAX => Class::SNaN,
            _ if !int => Class::Unsupported,
            _ => Class::Normal,
        }
    }

    pub fn is_nan(self) -> bool {
        matches!(self.class(), Class::QNaN | Class::SNaN)
    }

    pub fn is_zero(self) -> bool {
        self.exp == 0 && self.mant == 0
    }

    pub fn is_inf(self) -> bool {
        self.class() == Class::Infinity
    }

    /// Denormal or pseudo-denormal (exponent 0, significand not 0).
    pub fn is_denormal(self) -> bool {
        self.exp == 0 && self.mant != 0
    }

    /// A finite non-zero value as (normalised significand, unbiased-by-63 exponent): the value
    /// is `sig * 2^(e - BIAS - 63)` with bit 63 of `sig` set.
    fn norm(self) -> (i32, u64) {
        if self.exp == 0 {
            let lz = self.mant.leading_zeros();
            (1 - lz as i32, self.mant << lz)
        } else {
            (self.exp as i32, self.mant)
        }
    }

    /// A pseudo-denormal as the normal number of the same value (exponent 1).
    pub fn canonical(self) -> F80 {
        if self.exp == 0 && self.mant & INT_BIT != 0 {
            F80 { exp: 1, ..self }
        } else {
            self
        }
    }

    fn quiet(self) -> F80 {
        F80 {
            mant: self.mant | QUIET_BIT,
            ..self
        }
    }
}

/// Operation context: the control word in, status bits out.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub cw: u16,
    /// Exception flags and C1 raised so far (status-word bit positions).
    pub flags: u16,
}

/// Right shift that ORs every bit shifted out into bit 0 (sticky), for any shift amount.
fn shr_jam(x: u128, n: u32) -> u128 {
    if n == 0 {
        x
    } else if n >= 128 {
        (x != 0) as u128
    } else {
        (x >> n) | ((x & ((1u128 << n) - 1)) != 0) as u128
    }
}

/// A rounded result before packing: value `mant * 2^(e - BIAS - 63)`; a significand without
/// bit 63 is a denormal of the target format (at its minimum exponent).
struct Rounded {
    sign: bool,
    e: i32,
    mant: u64,
}

/// Bounds of a destination format, expressed in extended biased exponents.
#[derive(Clone, Copy)]
struct Format {
    prec: u32,
    emin: i32,
    emax: i32,
    /// Unmasked overflow/underflow deliver a wrapped result (register destinations only).
    wrap: bool,
}

const EXT: Format = Format {
    prec: 64,
    emin: 1,
    emax: 0x7FFE,
    wrap: true,
};
const DOUBLE: Format = Format {
    prec: 53,
    emin: BIAS - 1022,
    emax: BIAS + 1023,
    wrap: false,
};
const SINGLE: Format = Format {
    prec: 24,
    emin: BIAS - 126,
    emax: BIAS + 127,
    wrap: false,
};

impl Ctx {
    pub fn new(cw: u16) -> Ctx {
        Ctx { cw, flags: 0 }
    }

    pub fn rc(&self) -> u16 {
        (self.cw >> CW_RC_SHIFT) & 3
    }

    /// Significand bits kept by precision control (PC=01 is reserved and acts as 64 bits).
    fn pc(&self) -> u32 {
        match (self.cw >> CW_PC_SHIFT) & 3 {
            0 => 24,
            2 => 53,
            _ => 64,
        }
    }

    fn masked(&self, f: u16) -> bool {
        self.cw & f != 0
    }

    fn raise(&mut self, f: u16) {
        self.flags |= f;
    }

    /// Invalid operation: IE and the real indefinite.
    fn invalid(&mut self) -> F80 {
        self.raise(IE);
        F80::INDEFINITE
    }

    /// Whether rounding away from zero is due for discarded bits `rb` (of `half` = one half
    /// ulp) with the kept part's last bit `odd`.
    fn round_up(&self, sign: bool, rb: u128, half: u128, odd: bool) -> bool {
        match self.rc() {
            RC_NEAREST => rb > half || (rb == half && odd),
            RC_DOWN => sign && rb != 0,
            RC_UP => !sign && rb != 0,
            _ => false,
        }
    }

    /// Round `sig * 2^(e - BIAS - 127)` (any `sig`, sticky in bit 0) to `f`.
    fn round_fmt(&mut self, sign: bool, mut e: i32, mut sig: u128, f: Format) -> Rounded {
        if sig == 0 {
            return Rounded {
                sign,
                e: 0,
                mant: 0,
            };
        }
        let lz = sig.leading_zeros();
        sig <<= lz;
        e -= lz as i32;
        let drop = 128 - f.prec;
        let half = 1u128 << (drop - 1);
        let rmask = (1u128 << drop) - 1;
        if e < f.emin {
            if f.wrap && !self.masked(UE) && e + WRAP_BIAS < f.emin {
                // Unmasked underflow beyond what wrapping can hold (FSCALE): a zero.
                self.raise(UE | PE);
                return Rounded {
                    sign,
                    e: 0,
                    mant: 0,
                };
            }
            if f.wrap && !self.masked(UE) {
                // Unmasked underflow: deliver the result with its exponent wrapped into range.
                self.raise(UE);
                e += WRAP_BIAS;
            } else {
                // Tininess is detected after rounding (as if the exponent were unbounded).
                let q = sig >> drop;
                let carries =
                    self.round_up(sign, sig & rmask, half, q & 1 != 0) && q + 1 == 1u128 << f.prec;
                let tiny = e < f.emin - 1 || !carries;
                let sig = shr_jam(sig, (f.emin - e) as u32);
                let rb = sig & rmask;
                let mut q = sig >> drop;
                if rb != 0 {
                    self.raise(PE);
                    if tiny || !self.masked(UE) {
                        self.raise(UE);
                    }
                    if self.round_up(sign, rb, half, q & 1 != 0) {
                        q += 1;
                        self.raise(C1);
                    }
                } else if !self.masked(UE) {
                    // Unmasked underflow is reported for any tiny result, exact or not.
                    self.raise(UE);
                }
                return Rounded {
                    sign,
                    e: f.emin,
                    mant: (q << (64 - f.prec)) as u64,
                };
            }
        }
        let rb = sig & rmask;
        let mut q = sig >> drop;
        if rb != 0 {
            self.raise(PE);
            if self.round_up(sign, rb, half, q & 1 != 0) {
                q += 1;
                self.raise(C1);
                if q == 1u128 << f.prec {
                    q >>= 1;
                    e += 1;
                }
            }
        }
        if e > f.emax {
            if f.wrap && !self.masked(OE) && e - WRAP_BIAS > f.emax {
                // Unmasked overflow beyond what wrapping can hold (FSCALE): an infinity.
                self.raise(OE | PE | C1);
                return Rounded {
                    sign,
                    e: f.emax + 1,
                    mant: INT_BIT,
                };
            }
            if f.wrap && !self.masked(OE) {
                self.raise(OE);
                e -= WRAP_BIAS;
            } else {
                self.raise(OE | PE);
                let to_inf = match self.rc() {
                    RC_NEAREST => true,
                    RC_DOWN => sign,
                    RC_UP => !sign,
                    _ => false,
                };
                if to_inf {
                    self.raise(C1);
                    return Rounded {
                        sign,
                        e: f.emax + 1,
                        mant: INT_BIT,
                    };
                }
                self.flags &= !C1;
                return Rounded {
                    sign,
                    e: f.emax,
                    mant: (u64::MAX >> (64 - f.prec)) << (64 - f.prec),
                };
            }
        }
        Rounded {
            sign,
            e,
            mant: (q << (64 - f.prec)) as u64,
        }
    }

    /// Round to the extended format with significand precision `prec`.
    fn round_prec(&mut self, sign: bool, e: i32, sig: u128, prec: u32) -> F80 {
        let r = self.round_fmt(sign, e, sig, Format { prec, ..EXT });
        let exp = if r.mant & INT_BIT == 0 { 0 } else { r.e as u16 };
        F80::new(r.sign, exp, r.mant)
    }

    /// Round to extended under precision control (arithmetic results).
    fn round(&mut self, sign: bool, e: i32, sig: u128) -> F80 {
        let p = self.pc();
        self.round_prec(sign, e, sig, p)
    }

    /// Round to the full 64-bit significand (results precision control does not affect).
    pub(crate) fn round64(&mut self, sign: bool, e: i32, sig: u128) -> F80 {
        self.round_prec(sign, e, sig, 64)
    }

    /// Propagate NaN operands (at least one of `a`, `b` is a NaN), SDM Vol. 1 Table 4-7.
    fn nan2(&mut self, a: F80, b: F80) -> F80 {
        let (sa, sb) = (a.class() == Class::SNaN, b.class() == Class::SNaN);
        if sa || sb {
            self.raise(IE);
        }
        let (na, nb) = (a.is_nan(), b.is_nan());
        let pick_a = if !nb {
            true
        } else if !na {
            false
        } else if sa != sb {
            // A QNaN wins over an SNaN.
            sb
        } else {
            // Both of one kind: the larger significand, then the positive one.
            let (ma, mb) = (a.mant & !INT_BIT, b.mant & !INT_BIT);
            ma > mb || (ma == mb && (!a.sign || b.sign))
        };
        if pick_a {
            a.quiet()
        } else {
            b.quiet()
        }
    }

    /// One NaN operand: quieted, IE if it was signalling.
    fn nan1(&mut self, a: F80) -> F80 {
        if a.class() == Class::SNaN {
            self.raise(IE);
        }
        a.quiet()
    }

    /// Screen two operands: unsupported encodings and NaNs produce the result directly;
    /// denormals raise DE. Returns Some(result) when the operation is decided.
    fn screen2(&mut self, a: F80, b: F80) -> Option<F80> {
        let (ca, cb) = (a.class(), b.class());
        if ca == Class::Unsupported || cb == Class::Unsupported {
            return Some(self.invalid());
        }
        if a.is_nan() || b.is_nan() {
            return Some(self.nan2(a, b));
        }
        None
    }

    /// DE for denormal operands; true when DE is unmasked (the operation must not proceed).
    fn denormal_stop(&mut self, ops: &[F80]) -> bool {
        if ops.iter().any(|x| x.is_denormal()) {
            self.raise(DE);
            return !self.masked(DE);
        }
        false
    }

    fn screen1(&mut self, a: F80) -> Option<F80> {
        match a.class() {
            Class::Unsupported => Some(self.invalid()),
            Class::QNaN | Class::SNaN => Some(self.nan1(a)),
            _ => None,
        }
    }

    // ---- Arithmetic ----

    pub fn add(&mut self, a: F80, b: F80) -> F80 {
        self.add_sub(a, b, false)
    }

    pub fn sub(&mut self, a: F80, b: F80) -> F80 {
        self.add_sub(a, b, true)
    }

    fn add_sub(&mut self, a: F80, b: F80, negate_b: bool) -> F80 {
        if let Some(r) = self.screen2(a, b) {
            return r;
        }
        let bs = b.sign ^ negate_b;
        if a.is_inf() && b.is_inf() && a.sign != bs {
            return self.invalid();
        }
        if self.denormal_stop(&[a, b]) {
            return a;
        }
        if a.is_inf() {
            return a;
        }
        if b.is_inf() {
            return F80::inf(bs);
        }
        let (az, bz) = (a.is_zero(), b.is_zero());
        if az && bz {
            let s = if a.sign == bs {
                a.sign
            } else {
                self.rc() == RC_DOWN
            };
            return F80::zero(s);
        }
        if bz {
            return self.round(a.sign, a.norm().0, (a.norm().1 as u128) << 64);
        }
        if az {
            return self.round(bs, b.norm().0, (b.norm().1 as u128) << 64);
        }
        let (ea, ma) = a.norm();
        let (eb, mb) = b.norm();
        // Significands at bit 125 leave room for a carry; 62 bits below keep guard and sticky.
        let (mut ea, mut xa, mut sa) = (ea, (ma as u128) << 62, a.sign);
        let (mut eb, mut xb, mut sb) = (eb, (mb as u128) << 62, bs);
        if eb > ea || (eb == ea && xb > xa) {
            std::mem::swap(&mut ea, &mut eb);
            std::mem::swap(&mut xa, &mut xb);
            std::mem::swap(&mut sa, &mut sb);
        }
        xb = shr_jam(xb, (ea - eb) as u32);
        let sum = if sa == sb { xa + xb } else { xa - xb };
        if sum == 0 {
            return F80::zero(self.rc() == RC_DOWN);
        }
        // sig * 2^(e - BIAS - 127) with sig = sum << 2 has the value sum * 2^(ea - BIAS - 125).
        self.round(sa, ea + 2, sum)
    }

    pub fn mul(&mut self, a: F80, b: F80) -> F80 {
        if let Some(r) = self.screen2(a, b) {
            return r;
        }
        let s = a.sign ^ b.sign;
        if a.is_inf() || b.is_inf() {
            if a.is_zero() || b.is_zero() {
                return self.invalid();
            }
            self.denormal_stop(&[a, b]);
            return F80::inf(s);
        }
        if self.denormal_stop(&[a, b]) {
            return a;
        }
        if a.is_zero() || b.is_zero() {
            return F80::zero(s);
        }
        let (ea, ma) = a.norm();
        let (eb, mb) = b.norm();
        let p = ma as u128 * mb as u128;
        // (ma/2^63)(mb/2^63) = p/2^126, i.e. p * 2^(e - BIAS - 127) with e = ea + eb - BIAS + 1.
        self.round(s, ea + eb - BIAS + 1, p)
    }

    pub fn div(&mut self, a: F80, b: F80) -> F80 {
        if let Some(r) = self.screen2(a, b) {
            return r;
        }
        let s = a.sign ^ b.sign;
        match (a.is_inf(), b.is_inf()) {
            (true, true) => return self.invalid(),
            (true, false) => {
                self.denormal_stop(&[b]);
                return F80::inf(s);
            }
            (false, true) => {
                self.denormal_stop(&[a]);
                return F80::zero(s);
            }
            _ => {}
        }
        if a.is_zero() && b.is_zero() {
            return self.invalid();
        }
        // Division by zero is reported without the denormal exception.
        if b.is_zero() {
            self.raise(ZE);
            return F80::inf(s);
        }
        if self.denormal_stop(&[a, b]) {
            return a;
        }
        if a.is_zero() {
            return F80::zero(s);
        }
        let (ea, ma) = a.norm();
        let (eb, mb) = b.norm();
        // 128-bit quotient with its top bit set: (ma << 63 or 64) / mb in two 64-bit steps,
        // the final remainder as the sticky bit.
        let (num, e) = if ma >= mb {
            ((ma as u128) << 63, ea - eb + BIAS)
        } else {
            ((ma as u128) << 64, ea - eb + BIAS - 1)
        };
        let q1 = num / mb as u128;
        let r1 = num % mb as u128;
        let q2 = (r1 << 64) / mb as u128;
        let r2 = (r1 << 64) % mb as u128;
        let q = (q1 << 64) | q2 | (r2 != 0) as u128;
        self.round(s, e, q)
    }

    pub fn sqrt(&mut self, a: F80) -> F80 {
        if let Some(r) = self.screen1(a) {
            return r;
        }
        if a.is_zero() {
            return a;
        }
        if a.sign {
            return self.invalid();
        }
        if a.is_inf() {
            return a;
        }
        if self.denormal_stop(&[a]) {
            return a;
        }
        let (e, m) = a.norm();
        // value = m * 2^(e - BIAS - 63); make the power even: u = e - BIAS - 63 (+1 if odd).
        let u = e - BIAS - 63;
        let (s, u) = if u & 1 != 0 {
            ((m as u128) << 1, u - 1)
        } else {
            (m as u128, u)
        };
        // sqrt(s * 2^132) = sqrt(s) * 2^66: a 98-99 bit root, remainder for the sticky bit.
        let (root, rem) = isqrt_shifted(s, 66);
        let sig = root << 29 | (rem != 0) as u128;
        // root * 2^-66 * 2^(u/2) = sig * 2^(u/2 - 66 - 29) = sig * 2^(e' - BIAS - 127)
        self.round(false, u / 2 - 95 + 127 + BIAS, sig)
    }

    // ---- Comparison ----

    /// FCOM (`quiet` = false: any NaN is invalid) and FUCOM (`quiet`: only SNaN is invalid).
    pub fn compare(&mut self, a: F80, b: F80, quiet: bool) -> Cmp {
        let (ca, cb) = (a.class(), b.class());
        if ca == Class::Unsupported || cb == Class::Unsupported {
            self.raise(IE);
            return Cmp::Unordered;
        }
        if a.is_nan() || b.is_nan() {
            if !quiet || ca == Class::SNaN || cb == Class::SNaN {
                self.raise(IE);
            }
            return Cmp::Unordered;
        }
        if a.is_denormal() || b.is_denormal() {
            self.raise(DE);
        }
        if a.is_zero() && b.is_zero() {
            return Cmp::Equal;
        }
        let ka = order_key(a);
        let kb = order_key(b);
        match ka.cmp(&kb) {
            std::cmp::Ordering::Less => Cmp::Less,
            std::cmp::Ordering::Equal => Cmp::Equal,
            std::cmp::Ordering::Greater => Cmp::Greater,
        }
    }

    // ---- Rounding to integer ----

    /// FRNDINT: round to an integral value under the rounding control.
    pub fn round_int(&mut self, a: F80) -> F80 {
        if let Some(r) = self.screen1(a) {
            return r;
        }
        if a.is_zero() || a.is_inf() {
            return a;
        }
        if self.denormal_stop(&[a]) {
            return a;
        }
        let (e, m) = a.norm();
        let u = e - BIAS; // value = m * 2^(u - 63)
        if u >= 63 {
            return F80::new(a.sign, e as u16, m);
        }
        let (q, up, inexact) = self.int_part(a.sign, m, u);
        if inexact {
            self.raise(PE);
            if up {
                self.raise(C1);
            }
        }
        if q == 0 {
            return F80::zero(a.sign);
        }
        let lz = q.leading_zeros();
        F80::new(a.sign, (BIAS + 63 - lz as i32) as u16, q << lz)
    }

    /// Integer part of `m * 2^(u - 63)` (u < 63) rounded by RC: (magnitude, rounded up,
    /// inexact). The magnitude can reach 2^63 (only when u == 62 rounds up).
    fn int_part(&self, sign: bool, m: u64, u: i32) -> (u64, bool, bool) {
        let sh = 63 - u; // >= 1
        let x = (m as u128) << 64;
        let x = shr_jam(x, sh.min(127) as u32);
        let frac = x & ((1u128 << 64) - 1);
        let ip = (x >> 64) as u64;
        let up = self.round_up(sign, frac, 1u128 << 63, ip & 1 != 0);
        (ip.wrapping_add(up as u64), up, frac != 0)
    }

    /// Convert to a signed integer of `bits` (16, 32, 64) under RC; None (with IE) when the
    /// value is out of range or not a number: the caller stores the integer indefinite.
    pub fn to_int(&mut self, a: F80, bits: u32) -> Option<i64> {
        match a.class() {
            Class::Unsupported | Class::QNaN | Class::SNaN | Class::Infinity => {
                self.raise(IE);
                return None;
            }
            Class::Zero => return Some(0),
            Class::Denormal | Class::Normal => {}
        }
        let (e, m) = a.norm();
        let u = e - BIAS;
        if u >= 64 {
            self.raise(IE);
            return None;
        }
        let (q, up, inexact) = if u == 63 {
            (m, false, false)
        } else {
            self.int_part(a.sign, m, u)
        };
        let limit = 1u64 << (bits - 1);
        let ok = if a.sign { q <= limit } else { q < limit };
        if !ok || (u == 63 && !(a.sign && m == INT_BIT)) {
            self.raise(IE);
            return None;
        }
        if inexact {
            self.raise(PE);
            if up {
                self.raise(C1);
            }
        }
        Some(if a.sign {
            (q as i64).wrapping_neg()
        } else {
            q as i64
        })
    }

    // ---- Format conversions ----

    /// F80 to an IEEE single or double (bit pattern), rounded under RC.
    fn store_ieee(&mut self, a: F80, f: Format, exp_bits: u32) -> u64 {
        let frac_bits = f.prec - 1;
        let sign = (a.sign as u64) << (exp_bits + frac_bits);
        let exp_all = ((1u64 << exp_bits) - 1) << frac_bits;
        match a.class() {
            Class::Unsupported => {
                self.raise(IE);
                return sign_bit(exp_bits, frac_bits) | exp_all | 1 << (frac_bits - 1);
            }
            Class::QNaN | Class::SNaN => {
                let q = self.nan1(a);
                return sign | exp_all | ((q.mant & !INT_BIT) >> (64 - f.prec));
            }
            Class::Infinity => return sign | exp_all,
            // Stores do not report denormal operands.
            Class::Zero => return sign,
            Class::Denormal | Class::Normal => {}
        }
        let (e, m) = a.norm();
        let r = self.round_fmt(a.sign, e, (m as u128) << 64, f);
        if r.mant == 0 {
            return sign;
        }
        let bias = (1i32 << (exp_bits - 1)) - 1;
        let frac = (r.mant & !INT_BIT) >> (64 - f.prec);
        let exp = if r.mant & INT_BIT == 0 {
            0
        } else {
            (r.e - BIAS + bias) as u64
        };
        sign | exp << frac_bits | frac
    }

    pub fn to_f32(&mut self, a: F80) -> u32 {
        self.store_ieee(a, SINGLE, 8) as u32
    }

    pub fn to_f64(&mut self, a: F80) -> u64 {
        self.store_ieee(a, DOUBLE, 11)
    }

    /// An IEEE single or double (bit pattern) to F80: exact; SNaN quieted with IE, DE for
    /// denormals.
    fn load_ieee(&mut self, v: u64, exp_bits: u32, frac_bits: u32, quiet: bool) -> F80 {
        let sign = v >> (exp_bits + frac_bits) & 1 != 0;
        let exp = (v >> frac_bits) & ((1 << exp_bits) - 1);
        let frac = v & ((1u64 << frac_bits) - 1);
        let bias = (1i32 << (exp_bits - 1)) - 1;
        let m = frac << (63 - frac_bits);
        if exp == (1 << exp_bits) - 1 {
            if frac == 0 {
                return F80::inf(sign);
            }
            let nan = F80::new(sign, EXP_MAX, INT_BIT | m);
            return if quiet { self.nan1(nan) } else { nan };
        }
        if exp == 0 {
            if frac == 0 {
                return F80::zero(sign);
            }
            self.raise(DE);
            let lz = m.leading_zeros();
            return F80::new(sign, (BIAS - bias + 1 - lz as i32) as u16, m << lz);
        }
        F80::new(sign, (exp as i32 - bias + BIAS) as u16, INT_BIT | m)
    }

    /// FLD m32fp.
    pub fn from_f32(&mut self, v: u32) -> F80 {
        self.load_ieee(v as u64, 8, 23, true)
    }

    /// FLD m64fp.
    pub fn from_f64(&mut self, v: u64) -> F80 {
        self.load_ieee(v, 11, 52, true)
    }

    /// An m32fp arithmetic operand: like [`Ctx::from_f32`] but an SNaN stays signalling so
    /// the operation applies the NaN rules to it.
    pub fn f32_operand(&mut self, v: u32) -> F80 {
        self.load_ieee(v as u64, 8, 23, false)
    }

    /// An m64fp arithmetic operand.
    pub fn f64_operand(&mut self, v: u64) -> F80 {
        self.load_ieee(v, 11, 52, false)
    }

    // ---- Packed BCD ----

    /// FBSTP: round under RC and convert to 18 packed BCD digits; the BCD indefinite on
    /// invalid operands or values of 10^18 and more.
    pub fn to_bcd(&mut self, a: F80) -> [u8; 10] {
        const INDEF: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF];
        let mut out = [0u8; 10];
        let q = match a.class() {
            Class::Unsupported | Class::QNaN | Class::SNaN | Class::Infinity => {
                self.raise(IE);
                return INDEF;
            }
            Class::Zero => 0,
            _ => {
                let (e, m) = a.norm();
                let u = e - BIAS;
                if u >= 63 {
                    self.raise(IE);
                    return INDEF;
                }
                let (q, up, inexact) = self.int_part(a.sign, m, u);
                if q > 999_999_999_999_999_999 {
                    self.raise(IE);
                    return INDEF;
                }
                if inexact {
                    self.raise(PE);
                    if up {
                        self.raise(C1);
                    }
                }
                q
            }
        };
        let mut v = q;
        for b in out.iter_mut().take(9) {
            *b = (v % 10) as u8 | (((v / 10) % 10) as u8) << 4;
            v /= 100;
        }
        out[9] = (a.sign as u8) << 7;
        out
    }

    /// FBLD: 18 packed BCD digits to F80 (exact). Invalid digits are weighted as they stand.
    pub fn from_bcd(&mut self, b: [u8; 10]) -> F80 {
        let mut v: u64 = 0;
        for &byte in b[..9].iter().rev() {
            v = v
                .wrapping_mul(100)
                .wrapping_add((byte >> 4) as u64 * 10 + (byte & 15) as u64);
        }
        let sign = b[9] & 0x80 != 0;
        from_u64(sign, v)
    }

    // ---- Remainders, scaling, extraction ----

    /// FPREM (`nearest` = false, truncating quotient) and FPREM1 (`nearest`, IEEE
    /// remainder). Returns the new ST0 and the condition bits (C0, C1, C2, C3).
    pub fn prem(&mut self, a: F80, b: F80, nearest: bool) -> (F80, u16) {
        if let Some(r) = self.screen2(a, b) {
            return (r, 0);
        }
        if a.is_inf() || b.is_zero() {
            return (self.invalid(), 0);
        }
        if self.denormal_stop(&[a, b]) {
            return (a, 0);
        }
        if b.is_inf() || a.is_zero() {
            return (a.canonical(), 0);
        }
        let (ea, ma) = a.norm();
        let (eb, mb) = b.norm();
        let d = ea - eb;
        if d >= 64 {
            // Partial remainder: reduce the exponent by N, 32 <= N <= 63.
            let n = (d & 31) | 32;
            let num = (ma as u128) << n;
            let r = num % mb as u128;
            let res = self.round64(a.sign, ea - n, r << 64);
            return (res, C2);
        }
        if d < -1 || (d == -1 && !nearest) {
            return (a.canonical(), 0);
        }
        // Work in units of 2^(min(ea, eb) - BIAS - 63).
        let m = ea.min(eb);
        let x = (ma as u128) << (ea - m);
        let y = (mb as u128) << (eb - m);
        let mut q = x / y;
        let mut r = x % y;
        let mut sign = a.sign;
        if nearest && (2 * r > y || (2 * r == y && q & 1 != 0)) {
            q += 1;
            r = y - r;
            sign = !sign;
        }
        let mut cc = 0;
        if q & 4 != 0 {
            cc |= C0;
        }
        if q & 2 != 0 {
            cc |= C3;
        }
        if q & 1 != 0 {
            cc |= C1;
        }
        if r == 0 {
            return (F80::zero(a.sign), cc);
        }
        (self.round64(sign, m, r << 64), cc)
    }

    /// FSCALE: a * 2^trunc(b).
    pub fn scale(&mut self, a: F80, b: F80) -> F80 {
        if let Some(r) = self.screen2(a, b) {
            return r;
        }
        if b.is_inf() {
            if b.sign {
                if a.is_inf() {
                    return self.invalid();
                }
                self.denormal_stop(&[a]);
                return F80::zero(a.sign);
            }
            if a.is_zero() {
                return self.invalid();
            }
            self.denormal_stop(&[a]);
            return F80::inf(a.sign);
        }
        if self.denormal_stop(&[a, b]) {
            return a;
        }
        if a.is_zero() || a.is_inf() {
            return a;
        }
        let n: i32 = if b.is_zero() {
            0
        } else {
            let (e, m) = b.norm();
            let u = e - BIAS;
            let mag = if u < 0 {
                0
            } else if u >= 30 {
                1 << 30
            } else {
                (m >> (63 - u)) as i32
            };
            if b.sign {
                -mag
            } else {
                mag
            }
        };
        let (e, m) = a.norm();
        self.round64(a.sign, e + n, (m as u128) << 64)
    }

    /// FXTRACT: (significand with exponent 0, exponent as a value). Zero gives ZE and -inf.
    pub fn xtract(&mut self, a: F80) -> (F80, F80) {
        if let Some(r) = self.screen1(a) {
            return (r, r);
        }
        if a.is_zero() {
            self.raise(ZE);
            return (a, F80::inf(true));
        }
        if a.is_inf() {
            return (a, F80::inf(false));
        }
        if self.denormal_stop(&[a]) {
            return (a, a);
        }
        let (e, m) = a.norm();
        let x = e - BIAS;
        (
            F80::new(a.sign, BIAS as u16, m),
            from_u64(x < 0, x.unsigned_abs() as u64),
        )
    }

    /// Screens for operations with one operand used by the FPU layer: Some(result) for
    /// unsupported and NaN operands.
    pub fn screen_one(&mut self, a: F80) -> Option<F80> {
        self.screen1(a)
    }

    /// Screens for operations with two operands used by the FPU layer.
    pub fn screen_two(&mut self, a: F80, b: F80) -> Option<F80> {
        self.screen2(a, b)
    }

    /// Raise DE for denormal operands; true when the operation must stop (DE unmasked).
    pub fn check_denormal(&mut self, ops: &[F80]) -> bool {
        self.denormal_stop(ops)
    }

    /// IE with the real indefinite.
    pub fn raise_invalid(&mut self) -> F80 {
        self.invalid()
    }
}

fn sign_bit(exp_bits: u32, frac_bits: u32) -> u64 {
    1 << (exp_bits + frac_bits)
}

/// An exact integer magnitude as F80.
pub fn from_u64(sign: bool, v: u64) -> F80 {
    if v == 0 {
        return F80::zero(sign);
    }
    let lz = v.leading_zeros();
    F80::new(sign, (BIAS + 63 - lz as i32) as u16, v << lz)
}

/// A signed integer as F80 (FILD: always exact).
pub fn from_i64(v: i64) -> F80 {
    from_u64(v < 0, v.unsigned_abs())
}

/// A key that orders finite and infinite non-NaN values (zeros already handled).
fn order_key(a: F80) -> i128 {
    let (e, m) = if a.is_zero() { (0, 0) } else { a.norm() };
    let mag = ((e as i128 + 64) << 64) | m as i128;
    let mag = if a.is_zero() { 0 } else { mag };
    if a.sign {
        -mag
    } else {
        mag
    }
}

/// Integer square root of `s * 2^(2k)`: returns (root, remainder). `s` < 2^66, k <= 66.
fn isqrt_shifted(s: u128, k: u32) -> (u128, u128) {
    // Digit-by-digit: bring in two bits at a time from the top of s * 2^(2k).
    let total_bits = 66 + 2 * k; // s fits in 66 bits (even count)
    let mut root: u128 = 0;
    let mut rem: u128 = 0;
    let mut i = total_bits;
    while i > 0 {
        i -= 2;
        let pair = if i >= 2 * k {
            (s >> (i - 2 * k)) & 3
        } else {
            0
        };
        rem = (rem << 2) | pair;
        let trial = (root << 2) | 1;
        if rem >= trial {
            rem -= trial;
            root = (root << 1) | 1;
        } else {
            root <<= 1;
        }
    }
    (root, rem)
}
