//! Checks the soft-float against vectors captured on a real x87 (`testgen/gen.c`).

use super::float80::*;
use std::collections::BTreeMap;
use std::io::Read;

fn vectors() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/cpu/x87/testgen/vectors.txt.gz"
    );
    let gz = std::fs::read(path).expect("test vectors");
    let mut s = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut s)
        .expect("gzip");
    s
}

fn f80(s: &str) -> F80 {
    let v = u128::from_str_radix(s, 16).expect("hex");
    F80::new(v >> 79 & 1 != 0, (v >> 64) as u16 & 0x7FFF, v as u64)
}

fn hex80(x: F80) -> String {
    format!("{:04x}{:016x}", x.se(), x.mant)
}

/// Status bits the vectors record: condition codes, SF and the exception flags.
const SW_MASK: u16 = 0x477F;

fn cmp_bits(c: Cmp) -> u16 {
    match c {
        Cmp::Greater => 0,
        Cmp::Less => C0,
        Cmp::Equal => C3,
        Cmp::Unordered => C3 | C2 | C0,
    }
}

fn xam_bits(a: F80) -> u16 {
    let c = match a.class() {
        Class::Unsupported => 0,
        Class::QNaN | Class::SNaN => C0,
        Class::Normal => C2,
        Class::Infinity => C2 | C0,
        Class::Zero => C3,
        Class::Denormal => C3 | C2,
    };
    c | if a.sign { C1 } else { 0 }
}

/// Run one exactly-specified vector: (r1, r2, status) in the file's notation.
fn run_exact(op: &str, cw: u16, a: &str, b: &str) -> Option<(String, String, u16)> {
    let mut c = Ctx::new(cw);
    let dash = || "-".to_string();
    let (r1, r2, extra) = match op {
        "add" | "sub" | "mul" | "div" => {
            let (x, y) = (f80(a), f80(b));
            let r = match op {
                "add" => c.add(x, y),
                "sub" => c.sub(x, y),
                "mul" => c.mul(x, y),
                _ => c.div(x, y),
            };
            (hex80(r), dash(), 0)
        }
        "sqrt" => (hex80(c.sqrt(f80(a))), dash(), 0),
        "uadd" | "usub" | "umul" | "udiv" | "usqrt" | "uscale" => {
            // Unmasked exceptions: an unmasked IE, DE or ZE leaves the destination alone;
            // unmasked OE/UE deliver the exponent-wrapped result.
            let x = f80(a);
            let r = match op {
                "uadd" => c.add(x, f80(b)),
                "usub" => c.sub(x, f80(b)),
                "umul" => c.mul(x, f80(b)),
                "udiv" => c.div(x, f80(b)),
                "uscale" => c.scale(x, f80(b)),
                _ => c.sqrt(x),
            };
            let blocked = c.flags & !cw & (IE | DE | ZE) != 0;
            (hex80(if blocked { x } else { r }), dash(), 0)
        }
        "prem" | "prem1" => {
            let (r, cc) = c.prem(f80(a), f80(b), op == "prem1");
            (hex80(r), b.to_string(), cc)
        }
        "scale" => (hex80(c.scale(f80(a), f80(b))), b.to_string(), 0),
        "com" | "ucom" => {
            let r = c.compare(f80(a), f80(b), op == "ucom");
            (a.to_string(), dash(), cmp_bits(r))
        }
        "tst" => {
            let r = c.compare(f80(a), F80::ZERO, false);
            (a.to_string(), dash(), cmp_bits(r))
        }
        "xam" => (a.to_string(), dash(), xam_bits(f80(a))),
        "chs" => (hex80(f80(a).chs()), dash(), 0),
        "abs" => (hex80(f80(a).abs()), dash(), 0),
        "rndint" => (hex80(c.round_int(f80(a))), dash(), 0),
        "xtract" => {
            let (s, e) = c.xtract(f80(a));
            (hex80(s), hex80(e), 0)
        }
        "st32" => (format!("{:08x}", c.to_f32(f80(a))), dash(), 0),
        "st64" => (format!("{:016x}", c.to_f64(f80(a))), dash(), 0),
        "ist16" => {
            let v = c.to_int(f80(a), 16).unwrap_or(i16::MIN as i64);
            (format!("{:04x}", v as u16), dash(), 0)
        }
        "ist32" => {
            let v = c.to_int(f80(a), 32).unwrap_or(i32::MIN as i64);
            (format!("{:08x}", v as u32), dash(), 0)
        }
        "ist64" => {
            let v = c.to_int(f80(a), 64).unwrap_or(i64::MIN);
            (format!("{:016x}", v as u64), dash(), 0)
        }
        "bstp" => {
            let b = c.to_bcd(f80(a));
            let s: String = b.iter().rev().map(|x| format!("{x:02x}")).collect();
            (s, dash(), 0)
        }
        "ld32" => (
            hex80(c.from_f32(u32::from_str_radix(a, 16).ok()?)),
            dash(),
            0,
        ),
        "ld64" => (
            hex80(c.from_f64(u64::from_str_radix(a, 16).ok()?)),
            dash(),
            0,
        ),
        "bld" => {
            let v = u128::from_str_radix(a, 16).ok()?;
            let mut bytes = [0u8; 10];
            bytes.copy_from_slice(&v.to_le_bytes()[..10]);
            (hex80(c.from_bcd(bytes)), dash(), 0)
        }
        "ld1" | "ldl2t" | "ldl2e" | "ldpi" | "ldlg2" | "ldln2" | "ldz" => {
            let k = super::constant(op_const(op), c.rc());
            (hex80(k), dash(), 0)
        }
        _ => return None,
    };
    Some((r1, r2, (c.flags & (EXC_MASK | C1)) | extra))
}

fn op_const(op: &str) -> u8 {
    match op {
        "ld1" => 0,
        "ldl2t" => 1,
        "ldl2e" => 2,
        "ldpi" => 3,
        "ldlg2" => 4,
        "ldln2" => 5,
        _ => 6,
    }
}

#[test]
fn exact_ops_match_hardware() {
    let text = vectors();
    let mut stats: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut shown = BTreeMap::<String, u32>::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (op, cw, a, b, r1, r2, sw) = (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
        let cw = u16::from_str_radix(cw, 16).unwrap();
        let sw = u16::from_str_radix(sw, 16).unwrap() & SW_MASK;
        let Some((g1, g2, gsw)) = run_exact(op, cw, a, b) else {
            continue;
        };
        let e = stats.entry(op.to_string()).or_default();
        if g1 == r1 && g2 == r2 && gsw == sw {
            e.0 += 1;
        } else {
            e.1 += 1;
            let n = shown.entry(op.to_string()).or_default();
            if *n < 6 {
                *n += 1;
                eprintln!(
                    "MISMATCH {op} cw={cw:04x} a={a} b={b}: hw {r1} {r2} {sw:04x}, ours {g1} {g2} {gsw:04x}"
                );
            }
        }
    }
    let mut total = (0, 0);
    for (op, (p, f)) in &stats {
        eprintln!("{op:8} {p:6} passed {f:6} failed");
        total.0 += p;
        total.1 += f;
    }
    eprintln!("exact ops: {} passed, {} failed", total.0, total.1);
    assert_eq!(total.1, 0);
}

/// ULP distance between two finite F80 values of the same sign (u64::MAX otherwise).
fn ulps(a: F80, b: F80) -> u64 {
    if a == b {
        return 0;
    }
    if a.is_nan() && b.is_nan() {
        return if a.mant == b.mant && a.sign == b.sign {
            0
        } else {
            u64::MAX
        };
    }
    if a.sign != b.sign || a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let key = |x: F80| ((x.exp as u128) << 64 | x.mant as u128) as i128;
    (key(a) - key(b)).unsigned_abs().min(u64::MAX as u128) as u64
}

#[test]
fn transcendentals_within_one_ulp() {
    use super::trans;
    let text = vectors();
    let mut stats: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut shown = BTreeMap::<String, u32>::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (op, cw, a, b, r1, r2, sw) = (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
        let cw = u16::from_str_radix(cw, 16).unwrap();
        let sw = u16::from_str_radix(sw, 16).unwrap();
        if !matches!(
            op,
            "sin" | "cos" | "tan" | "sincos" | "f2xm1" | "atan" | "yl2x" | "yl2xp1"
        ) {
            continue;
        }
        let mut c = Ctx::new(cw);
        let x = f80(a);
        // (results, C2 set for out-of-range arguments)
        let (g1, g2, c2): (F80, Option<F80>, bool) = match op {
            "sin" => trans::sin(&mut c, x).map_or((x, None, true), |r| (r, None, false)),
            "cos" => trans::cos(&mut c, x).map_or((x, None, true), |r| (r, None, false)),
            "tan" => trans::tan(&mut c, x).map_or((x, Some(F80::ZERO), true), |r| {
                (if r.is_nan() { r } else { F80::ONE }, Some(r), false)
            }),
            "sincos" => trans::sincos(&mut c, x)
                .map_or((x, Some(F80::ZERO), true), |(s, co)| (co, Some(s), false)),
            "f2xm1" => (trans::f2xm1(&mut c, x), None, false),
            "atan" => (trans::atan(&mut c, f80(b), x), None, false),
            "yl2x" => (trans::yl2x(&mut c, x, f80(b)), None, false),
            "yl2xp1" => (trans::yl2xp1(&mut c, x, f80(b)), None, false),
            _ => continue,
        };
        let h1 = f80(r1);
        let h2 = (r2 != "-").then(|| f80(r2));
        let mut ok = ulps(g1, h1) <= 1 && (c.flags & IE) == (sw & IE) && (sw & C2 != 0) == c2;
        if !c2 {
            if let (Some(g), Some(h)) = (g2, h2) {
                ok &= ulps(g, h) <= 1;
            }
        }
        let e = stats.entry(op.to_string()).or_default();
        if ok {
            e.0 += 1;
        } else {
            e.1 += 1;
            let n = shown.entry(op.to_string()).or_default();
            if *n < 8 {
                *n += 1;
                eprintln!(
                    "MISMATCH {op} a={a} b={b}: hw {r1} {r2} {sw:04x}, ours {} {} {:04x}",
                    hex80(g1),
                    g2.map_or("-".into(), hex80),
                    c.flags | if c2 { C2 } else { 0 }
                );
            }
        }
    }
    let mut total = (0, 0);
    for (op, (p, f)) in &stats {
        eprintln!("{op:8} {p:6} passed {f:6} failed");
        total.0 += p;
        total.1 += f;
    }
    eprintln!("transcendentals: {} passed, {} failed", total.0, total.1);
    assert_eq!(total.1, 0);
}
