//! Transcendental instructions: F2XM1, FYL2X, FYL2XP1, FPTAN, FPATAN, FSIN, FCOS, FSINCOS.
//!
//! The hardware is not correctly rounded either; these evaluate in a 128-bit-significand
//! software format ([`Bf`], truncating arithmetic, about 120 good bits) and round once to
//! extended, which stays within an ulp of the hardware. Trigonometric arguments are reduced
//! exactly modulo the 66-bit pi the x87 uses internally, so large arguments give the
//! hardware's (not the mathematically exact) results.

use super::float80::{Ctx, BIAS, C1, F80, PE, ZE};

/// A value `m / 2^127 * 2^e` with `m` normalised (bit 127 set) or zero.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf {
    neg: bool,
    e: i32,
    m: u128,
}

/// pi with 128 significant bits (pi = PI_M / 2^127 * 2).
const PI_M: u128 = 0xC90F_DAA2_2168_C234_C4C6_628B_80DC_1CD1;
/// ln 2 with 128 significant bits (ln2 = LN2_M / 2^127 / 2).
const LN2_M: u128 = 0xB172_17F7_D1CF_79AB_C9E3_B398_03F2_F6AF;
/// The 66-bit pi of the x87's argument reduction, as an integer: pi ~ PI66 * 2^-64.
const PI66: u128 = (0xC90F_DAA2_2168_C234u128 << 2) | 3;

/// 128x128 -> 256-bit product as (high, low).
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let (a1, a0) = (a >> 64, a & u64::MAX as u128);
    let (b1, b0) = (b >> 64, b & u64::MAX as u128);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & u64::MAX as u128) + (p10 & u64::MAX as u128);
    let lo = (p00 & u64::MAX as u128) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

impl Bf {
    const ZERO: Bf = Bf {
        neg: false,
        e: 0,
        m: 0,
    };

    fn new(neg: bool, e: i32, m: u128) -> Bf {
        if m == 0 {
            return Bf::ZERO;
        }
        let lz = m.leading_zeros();
        Bf {
            neg,
            e: e - lz as i32,
            m: m << lz,
        }
    }

    fn one() -> Bf {
        Bf::new(false, 0, 1 << 127)
    }

    fn int(v: u64) -> Bf {
        Bf::new(false, 127, v as u128)
    }

    fn pi() -> Bf {
        Bf::new(false, 1, PI_M)
    }

    fn ln2() -> Bf {
        Bf::new(false, -1, LN2_M)
    }

    /// A finite F80.
    fn from_f80(a: F80) -> Bf {
        if a.is_zero() {
            return Bf {
                neg: a.sign,
                ..Bf::ZERO
            };
        }
        let (e, m) = if a.exp == 0 {
            (1, a.mant)
        } else {
            (a.exp as i32, a.mant)
        };
        Bf::new(a.sign, e - BIAS + 64, m as u128)
    }

    fn is_zero(self) -> bool {
        self.m == 0
    }

    fn neg(self) -> Bf {
        Bf {
            neg: !self.neg,
            ..self
        }
    }

    fn abs(self) -> Bf {
        Bf { neg: false, ..self }
    }

    fn scale(self, n: i32) -> Bf {
        if self.m == 0 {
            self
        } else {
            Bf {
                e: self.e + n,
                ..self
            }
        }
    }

    fn mul(self, o: Bf) -> Bf {
        if self.m == 0 || o.m == 0 {
            return Bf::ZERO;
        }
        let (hi, lo) = mul_wide(self.m, o.m);
        // The product is (hi:lo) / 2^254 in [1, 4).
        let (m, e) = if hi >> 127 != 0 {
            (hi, self.e + o.e + 1)
        } else {
            ((hi << 1) | (lo >> 127), self.e + o.e)
        };
        Bf {
            neg: self.neg ^ o.neg,
            e,
            m,
        }
    }

    fn add(self, o: Bf) -> Bf {
        if o.m == 0 {
            return self;
        }
        if self.m == 0 {
            return o;
        }
        let (a, b) = if (self.e, self.m) >= (o.e, o.m) {
            (self, o)
        } else {
            (o, self)
        };
        let d = (a.e - b.e) as u32;
        // One bit of headroom for the carry.
        let am = a.m >> 1;
        let bm = if d >= 127 { 0 } else { (b.m >> 1) >> d };
        if a.neg == b.neg {
            Bf::new(a.neg, a.e + 1, am + bm)
        } else {
            Bf::new(a.neg, a.e + 1, am - bm)
        }
    }

    fn sub(self, o: Bf) -> Bf {
        self.add(o.neg())
    }

    fn div(self, o: Bf) -> Bf {
        if self.m == 0 {
            return Bf::ZERO;
        }
        // Restoring division, 128 quotient bits.
        let mut r = self.m;
        let d = o.m;
        let mut e = self.e - o.e;
        let mut q: u128 = 0;
        if r >= d {
            r -= d;
            q = 1;
        } else {
            e -= 1;
            let c = r >> 127;
            r <<= 1;
            if c != 0 || r >= d {
                r = r.wrapping_sub(d);
                q = 1;
            }
        }
        for _ in 0..127 {
            let c = r >> 127;
            r <<= 1;
            q <<= 1;
            if c != 0 || r >= d {
                r = r.wrapping_sub(d);
                q |= 1;
            }
        }
        Bf {
            neg: self.neg ^ o.neg,
            e,
            m: q,
        }
    }

    fn sqrt(self) -> Bf {
        if self.m == 0 {
            return Bf::ZERO;
        }
        // Seed from the top 53 bits, then Newton (each step doubles the good bits).
        let (e2, top) = if self.e & 1 == 0 {
            (self.e, (self.m >> 75) as f64 / (1u64 << 52) as f64)
        } else {
            (self.e - 1, (self.m >> 75) as f64 / (1u64 << 51) as f64)
        };
        let seed = top.sqrt();
        let mut s = Bf::new(
            false,
            e2 / 2 + 127 - 52,
            (seed * (1u64 << 52) as f64) as u128,
        );
        for _ in 0..3 {
            s = s.add(self.div(s)).scale(-1);
        }
        s
    }

    /// Round to extended (64-bit significand, rounding control of `c`).
    fn to_f80(self, c: &mut Ctx) -> F80 {
        if self.m == 0 {
            return F80::zero(self.neg);
        }
        // Only the top ~120 bits are meaningful: keep a sticky bit rather than the noise.
        let m = self.m | 1;
        c.round64(self.neg, self.e.clamp(-40000, 40000) + BIAS, m)
    }
}

/// sin and cos of |r| <= pi/4 by their Taylor series.
fn sin_cos(r: Bf) -> (Bf, Bf) {
    let r2 = r.mul(r);
    let mut s = r;
    let mut term = r;
    let mut n = 1u64;
    while term.m != 0 && term.e > s.e - 130 && n < 80 {
        term = term.mul(r2).div(Bf::int((n + 1) * (n + 2))).neg();
        s = s.add(term);
        n += 2;
    }
    let mut co = Bf::one();
    let mut term = Bf::one();
    let mut n = 0u64;
    while term.m != 0 && term.e > -130 && n < 80 {
        term = term.mul(r2).div(Bf::int((n + 1) * (n + 2))).neg();
        co = co.add(term);
        n += 2;
    }
    (s, co)
}

/// Reduce |x| (finite, < 2^63) modulo the hardware's pi/2: (remainder, quadrant).
fn reduce(x: F80) -> (Bf, u32) {
    let (e, m) = if x.exp == 0 {
        (1, x.mant)
    } else {
        (x.exp as i32, x.mant)
    };
    let u = e - BIAS; // |x| = m * 2^(u - 63)
    if u < -1 || m == 0 {
        return (Bf::from_f80(x.abs()), 0);
    }
    // |x| in units of 2^-65, where pi/2 ~ PI66 units.
    let xu = (m as u128) << (u + 2);
    let (mut k, rem) = (xu / PI66, xu % PI66);
    let r = if rem <= PI66 / 2 {
        Bf::new(false, 127 - 65, rem)
    } else {
        k += 1;
        Bf::new(true, 127 - 65, PI66 - rem)
    };
    (r, (k & 3) as u32)
}

/// Screen the single operand of a trigonometric instruction: Err(result) when decided.
fn trig_screen(c: &mut Ctx, x: F80) -> Result<(), Option<F80>> {
    if let Some(r) = c.screen_one(x) {
        return Err(Some(r));
    }
    if x.is_inf() {
        return Err(Some(c.raise_invalid()));
    }
    if c.check_denormal(&[x]) {
        return Err(Some(x));
    }
    // |x| >= 2^63: out of range, C2 set by the caller and the operand kept.
    if !x.is_zero() && (x.exp as i32 - BIAS) >= 63 {
        return Err(None);
    }
    Ok(())
}

/// sin and cos of a finite in-range x.
fn sin_cos_x(x: F80) -> (Bf, Bf) {
    let (r, q) = reduce(x);
    let (s, co) = sin_cos(r);
    let (s, co) = match q {
        0 => (s, co),
        1 => (co, s.neg()),
        2 => (s.neg(), co.neg()),
        _ => (co.neg(), s),
    };
    if x.sign {
        (s.neg(), co)
    } else {
        (s, co)
    }
}

/// FSIN: None when |x| >= 2^63.
pub fn sin(c: &mut Ctx, x: F80) -> Option<F80> {
    if let Err(r) = trig_screen(c, x) {
        return r;
    }
    if x.is_zero() {
        return Some(x);
    }
    Some(sin_cos_x(x).0.to_f80(c))
}

/// FCOS: None when |x| >= 2^63.
pub fn cos(c: &mut Ctx, x: F80) -> Option<F80> {
    if let Err(r) = trig_screen(c, x) {
        return r;
    }
    if x.is_zero() {
        return Some(F80::ONE);
    }
    Some(sin_cos_x(x).1.to_f80(c))
}

/// FSINCOS: (sin, cos); None when |x| >= 2^63.
pub fn sincos(c: &mut Ctx, x: F80) -> Option<(F80, F80)> {
    if let Err(r) = trig_screen(c, x) {
        return r.map(|v| (v, v));
    }
    if x.is_zero() {
        return Some((x, F80::ONE));
    }
    let (s, co) = sin_cos_x(x);
    let s = s.to_f80(c);
    // C1 says how the cosine (the new ST0) was rounded, not the sine, as on Intel hardware
    // (the SDM's "set if result was rounded up" does not say which).
    c.flags &= !C1;
    Some((s, co.to_f80(c)))
}

/// FPTAN: tan x (the caller pushes 1.0); None when |x| >= 2^63.
pub fn tan(c: &mut Ctx, x: F80) -> Option<F80> {
    if let Err(r) = trig_screen(c, x) {
        return r;
    }
    if x.is_zero() {
        return Some(x);
    }
    let (s, co) = sin_cos_x(x);
    Some(s.div(co).to_f80(c))
}

/// atan(t) for t >= 0.
fn atan_pos(t: Bf) -> Bf {
    if t.is_zero() {
        return Bf::ZERO;
    }
    if t.e >= 0 && !(t.e == 0 && t.m == 1 << 127) {
        // t > 1: atan t = pi/2 - atan(1/t).
        return Bf::pi().scale(-1).sub(atan_pos(Bf::one().div(t)));
    }
    // Two halvings, atan t = 2 atan(t / (1 + sqrt(1 + t^2))), bring t below 0.2.
    let mut t = t;
    for _ in 0..2 {
        let s = Bf::one().add(t.mul(t)).sqrt();
        t = t.div(Bf::one().add(s));
    }
    let t2 = t.mul(t);
    let mut sum = t;
    let mut pow = t;
    let mut n = 1u64;
    while n < 200 {
        pow = pow.mul(t2).neg();
        let term = pow.div(Bf::int(n + 2));
        if term.m == 0 || term.e < sum.e - 130 {
            break;
        }
        sum = sum.add(term);
        n += 2;
    }
    sum.scale(2)
}

/// FPATAN: atan(y / x) in the quadrant of (x, y).
pub fn atan(c: &mut Ctx, y: F80, x: F80) -> F80 {
    if let Some(r) = c.screen_two(y, x) {
        return r;
    }
    if c.check_denormal(&[x, y]) {
        return y;
    }
    let pi = Bf::pi();
    let r = if y.is_zero() {
        if x.sign {
            pi
        } else {
            return F80::zero(y.sign);
        }
    } else if y.is_inf() {
        if x.is_inf() {
            if x.sign {
                pi.mul(Bf::int(3)).scale(-2)
            } else {
                pi.scale(-2)
            }
        } else {
            pi.scale(-1)
        }
    } else if x.is_inf() {
        if x.sign {
            pi
        } else {
            return F80::zero(y.sign);
        }
    } else if x.is_zero() {
        pi.scale(-1)
    } else {
        let (ax, ay) = (Bf::from_f80(x).abs(), Bf::from_f80(y).abs());
        let a = atan_pos(ay.div(ax));
        if x.sign {
            pi.sub(a)
        } else {
            a
        }
    };
    let r = if y.sign { r.neg() } else { r };
    r.to_f80(c)
}

/// 2 atanh(s) = ln((1 + s) / (1 - s)) by its series.
fn atanh2(s: Bf) -> Bf {
    let s2 = s.mul(s);
    let mut sum = s;
    let mut pow = s;
    let mut n = 1u64;
    while n < 400 {
        pow = pow.mul(s2);
        let term = pow.div(Bf::int(n + 2));
        if term.m == 0 || term.e < sum.e - 130 {
            break;
        }
        sum = sum.add(term);
        n += 2;
    }
    sum.scale(1)
}

/// log2 of a positive finite value.
fn log2(x: Bf) -> Bf {
    // x = f * 2^k with f in [sqrt(1/2), sqrt(2)).
    let mut k = x.e;
    let mut f = Bf { e: 0, ..x };
    // sqrt(2) ~ 0xB504F333F9DE6484 / 2^63.
    if f.m > 0xB504_F333_F9DE_6484u128 << 64 {
        f = f.scale(-1);
        k += 1;
    }
    let one = Bf::one();
    let s = f.sub(one).div(f.add(one));
    let ln = atanh2(s);
    Bf::new(k < 0, 127, k.unsigned_abs() as u128).add(ln.div(Bf::ln2()))
}

/// FYL2X: y * log2(x).
pub fn yl2x(c: &mut Ctx, x: F80, y: F80) -> F80 {
    if let Some(r) = c.screen_two(x, y) {
        return r;
    }
    if x.sign && !x.is_zero() {
        return c.raise_invalid();
    }
    // log2(0): invalid (times 0) or an exact infinity, zero-divide (but times infinity):
    // before a denormal y is noticed (no DE), as on Intel hardware and as for FDIV.
    if x.is_zero() {
        if y.is_zero() {
            return c.raise_invalid();
        }
        if !y.is_inf() {
            c.flags |= ZE;
        }
        return F80::inf(!y.sign);
    }
    if c.check_denormal(&[x, y]) {
        return y;
    }
    let one = F80::ONE;
    if x.is_inf() {
        if y.is_zero() {
            return c.raise_invalid();
        }
        return F80::inf(y.sign);
    }
    let x_is_one = x.canonical() == one;
    if y.is_inf() {
        if x_is_one {
            return c.raise_invalid();
        }
        let below_one = x.exp < 0x3FFF;
        return F80::inf(y.sign ^ below_one);
    }
    if x_is_one || y.is_zero() {
        let below_one = x.exp < 0x3FFF;
        return F80::zero(y.sign ^ (below_one && !x_is_one));
    }
    let l = log2(Bf::from_f80(x));
    Bf::from_f80(y).mul(l).to_f80(c)
}

/// FYL2XP1: y * log2(1 + x), for |x| < 1 - sqrt(2)/2 (others computed the same way).
pub fn yl2xp1(c: &mut Ctx, x: F80, y: F80) -> F80 {
    if let Some(r) = c.screen_two(x, y) {
        return r;
    }
    // An invalid operation comes before a denormal operand (no DE), as on Intel hardware.
    if x.is_inf() && (x.sign || y.is_zero()) {
        return c.raise_invalid();
    }
    if c.check_denormal(&[x, y]) {
        return y;
    }
    if x.is_inf() {
        return F80::inf(y.sign);
    }
    let bx = Bf::from_f80(x);
    let one = Bf::one();
    let z = one.add(bx);
    if y.is_zero() && !x.is_zero() {
        return F80::zero(x.sign ^ y.sign);
    }
    if z.neg && !z.is_zero() {
        // Below -1 (far outside the documented domain) the hardware returns the operand.
        if y.is_inf() {
            return F80::inf(x.sign ^ y.sign);
        }
        c.flags |= PE;
        return x;
    }
    if x.is_zero() {
        if y.is_inf() {
            return c.raise_invalid();
        }
        return F80::zero(x.sign ^ y.sign);
    }
    if y.is_inf() {
        return F80::inf(y.sign ^ x.sign);
    }
    if y.is_zero() {
        return F80::zero(x.sign ^ y.sign);
    }
    if z.is_zero() {
        c.flags |= ZE;
        return F80::inf(!y.sign);
    }
    // Near 1 + x = 1 the series in s = x / (2 + x) keeps the relative accuracy of x.
    let l = if bx.e < -1 {
        atanh2(bx.div(one.scale(1).add(bx))).div(Bf::ln2())
    } else {
        log2(z)
    };
    Bf::from_f80(y).mul(l).to_f80(c)
}

/// F2XM1: 2^x - 1, for -1 <= x <= 1 (others computed the same way).
pub fn f2xm1(c: &mut Ctx, x: F80) -> F80 {
    if let Some(r) = c.screen_one(x) {
        return r;
    }
    if x.is_zero() {
        return x;
    }
    if x.is_inf() {
        return if x.sign { F80::ONE.chs() } else { x };
    }
    if c.check_denormal(&[x]) {
        return x;
    }
    if x.exp >= 0x3FFF && x.canonical() != F80::ONE.abs() && x.abs() != F80::ONE {
        // Outside the documented domain the hardware returns the operand, inexact.
        c.flags |= PE;
        return x;
    }
    let z = Bf::from_f80(x).mul(Bf::ln2());
    // Halve the argument until small, then expm1(2z) = expm1(z) * (expm1(z) + 2).
    let halvings = (z.e + 4).max(0);
    let z = z.scale(-halvings);
    let mut sum = z;
    let mut term = z;
    let mut n = 1u64;
    while n < 100 {
        term = term.mul(z).div(Bf::int(n + 1));
        if term.m == 0 || term.e < sum.e - 130 {
            break;
        }
        sum = sum.add(term);
        n += 1;
    }
    let two = Bf::one().scale(1);
    for _ in 0..halvings {
        sum = sum.mul(sum.add(two));
    }
    sum.to_f80(c)
}

#[cfg(test)]
mod tests {
    use super::super::float80::{from_u64, IE};
    use super::*;

    #[test]
    fn constants_agree_with_series() {
        // ln 2 = 2 atanh(1/3).
        let ln2 = atanh2(Bf::one().div(Bf::int(3)));
        assert!(
            (ln2.m as i128 - LN2_M as i128).abs() < 1 << 12,
            "{:x}",
            ln2.m
        );
        // pi = 16 atan(1/5) - 4 atan(1/239) (Machin).
        let a = atan_pos(Bf::one().div(Bf::int(5))).scale(4);
        let b = atan_pos(Bf::one().div(Bf::int(239))).scale(2);
        let pi = a.sub(b);
        assert_eq!(pi.e, 1);
        assert!((pi.m as i128 - PI_M as i128).abs() < 1 << 12, "{:x}", pi.m);
    }

    #[test]
    fn integer_helpers() {
        let mut c = Ctx::new(0x037F);
        assert_eq!(Bf::int(3).to_f80(&mut c), from_u64(false, 3));
        assert_eq!(c.flags & IE, 0);
    }
}
