//! FPU instruction tests: small real-mode programs made only of x87 instructions (assembled
//! with nasm; the listing is in the comments), run for an exact instruction count.

use super::float80::{F80, IE, ZE};
use super::*;
use crate::bus::Bus;
use crate::cpu::{SegCache, CR0_NE, CR0_TS, ESP};
use std::cell::Cell;
use std::rc::Rc;

const CODE: u32 = 0x1000;

fn cpu_with(code: &[u8], bus: Option<Box<dyn Bus>>) -> Cpu {
    let mut cpu = match bus {
        Some(b) => Cpu::new(1 << 20, b),
        None => Cpu::with_ram(1 << 20),
    };
    cpu.mem.load(CODE, code);
    cpu.segs[Segment::CS as usize] = SegCache::real(0);
    cpu.eip = CODE;
    cpu.regs[ESP] = 0x8000;
    cpu
}

fn cpu(code: &[u8]) -> Cpu {
    cpu_with(code, None)
}

fn ram16(cpu: &Cpu, a: usize) -> u16 {
    u16::from_le_bytes([cpu.mem.ram[a], cpu.mem.ram[a + 1]])
}

fn ram64(cpu: &Cpu, a: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&cpu.mem.ram[a..a + 8]);
    u64::from_le_bytes(b)
}

/// Decode and execute the instruction at CS:EIP directly (no exception delivery).
fn exec_one(cpu: &mut Cpu) -> Fault {
    let (i, _) = cpu.decode_one(cpu.eip)?;
    cpu.eip = cpu.eip.wrapping_add(i.len as u32);
    (i.exec)(cpu, &i)
}

/// Point interrupt vector `v` at 0000:`ip`.
fn set_vector(cpu: &mut Cpu, v: u8, ip: u16) {
    let a = 4 * v as u32;
    cpu.mem.load(a, &[ip as u8, (ip >> 8) as u8, 0, 0]);
}

#[test]
fn power_on_and_finit_state() {
    let mut c = cpu(&[0xDB, 0xE3]); // fninit
    assert_eq!(c.fpu.cw, CW_POWER_ON);
    assert_eq!(c.fpu.tags, 0x5555);
    c.run(1);
    assert_eq!(c.fpu.cw, 0x037F);
    assert_eq!(c.fpu.status_word(), 0);
    assert_eq!(c.fpu.tag_word(), 0xFFFF);
}

#[test]
fn arithmetic_forms_and_memory_operands() {
    let code = [
        0xDB, 0xE3, // fninit
        0xDF, 0x06, 0x00, 0x20, // fild word [0x2000]      ; 3
        0xDF, 0x06, 0x02, 0x20, // fild word [0x2002]      ; 4
        0xDC, 0xE9, // fsub st1, st0              ; st1 = 3 - 4
        0xDC, 0xE1, // fsubr st1, st0             ; st1 = 4 - (-1)
        0xDE, 0xF9, // fdivp st1, st0             ; 5 / 4, pop
        0xDF, 0x1E, 0x10, 0x20, // fistp word [0x2010]     ; 1 (1.25 rounded)
        0xD9, 0x06, 0x04, 0x20, // fld dword [0x2004]      ; 2.0
        0xDC, 0xC8, // fmul st0, st0
        0xD9, 0xFA, // fsqrt
        0xDD, 0x1E, 0x18, 0x20, // fstp qword [0x2018]
    ];
    let mut c = cpu(&code);
    c.mem.load(0x2000, &[3, 0, 4, 0]);
    c.mem.load(0x2004, &2.0f32.to_bits().to_le_bytes());
    c.run(11);
    assert_eq!(c.eip, CODE + code.len() as u32);
    assert_eq!(ram16(&c, 0x2010), 1);
    assert_eq!(f64::from_bits(ram64(&c, 0x2018)), 2.0);
    assert_eq!(c.fpu.tag_word(), 0xFFFF);
    assert_eq!(c.fpu.top, 0);
    // 1.25 -> 1 is inexact, rounded down.
    assert_eq!(c.fpu.sw & (PE_BIT | C1), PE_BIT);
    // FOP and FDP of the last instruction (fstp qword [0x2018]: DD 1E).
    assert_eq!(c.fpu.fop, 0x51E);
    assert_eq!(c.fpu.fdp, 0x2018);
    assert_eq!(c.fpu.fip, CODE + code.len() as u32 - 4);
}

const PE_BIT: u16 = float80::PE;

#[test]
fn stack_overflow_pushes_indefinite() {
    let code = [0xD9, 0xE8].repeat(9); // 9 x fld1
    let mut c = cpu(&code);
    c.fpu.init();
    c.run(9);
    assert_eq!(c.fpu.sw & (IE | SW_SF | C1), IE | SW_SF | C1);
    assert_eq!(c.fpu.st(0), F80::INDEFINITE);
    assert_eq!(c.fpu.st(1), F80::ONE);
}

#[test]
fn stack_underflow_on_empty_operand() {
    let mut c = cpu(&[0xDB, 0xE3, 0xD9, 0xFA]); // fninit; fsqrt
    c.run(2);
    assert_eq!(c.fpu.sw & (IE | SW_SF | C1), IE | SW_SF);
    assert_eq!(c.fpu.st(0), F80::INDEFINITE);
}

/// fninit; fldcw [0x2020] (ZE unmasked); fld1; fldz; fdivp st1, st0; fld1
const PENDING: [u8; 16] = [
    0xDB, 0xE3, 0xD9, 0x2E, 0x20, 0x20, 0xD9, 0xE8, 0xD9, 0xEE, 0xDE, 0xF9, 0xD9, 0xE8, 0x90, 0x90,
];

#[test]
fn unmasked_exception_raises_mf_on_next_waiting_instruction() {
    let mut c = cpu(&PENDING);
    c.cr0 |= CR0_NE;
    c.mem.load(0x2020, &(0x037Fu16 & !ZE).to_le_bytes());
    set_vector(&mut c, exception::MF, 0x3000);
    c.mem.load(0x3000, &[0xDB, 0xE2]); // fnclex
                                       // Five instructions, the #MF delivery (which counts against the run budget), fnclex.
    c.run(7);
    assert_eq!(c.eip, 0x3002, "#MF delivered and handler ran");
    // The destination was left alone, the pointers name the faulting FDIVP.
    assert_eq!(c.fpu.st(0), F80::ZERO);
    assert_eq!(c.fpu.st(1), F80::ONE);
    assert_eq!(c.fpu.fip, CODE + 10);
    assert_eq!(c.fpu.fop, 0x6F9);
    assert_eq!(c.fpu.sw & (SW_ES | ZE), 0, "fnclex cleared it");
}

struct FerrBus(Rc<Cell<i32>>);

impl Bus for FerrBus {
    fn io_read(&mut self, _: u16, _: u8) -> u32 {
        u32::MAX
    }
    fn io_write(&mut self, _: u16, _: u8, _: u32) {}
    fn mmio_read(&mut self, _: u32, _: u8) -> u32 {
        u32::MAX
    }
    fn mmio_write(&mut self, _: u32, _: u8, _: u32) {}
    fn fpu_error(&mut self, asserted: bool) {
        if asserted {
            self.0.set(self.0.get() + 1);
        }
    }
}

#[test]
fn unmasked_exception_without_ne_uses_ferr() {
    let count = Rc::new(Cell::new(0));
    let mut c = cpu_with(&PENDING, Some(Box::new(FerrBus(count.clone()))));
    c.mem.load(0x2020, &(0x037Fu16 & !ZE).to_le_bytes());
    c.run(6);
    assert_eq!(c.eip, CODE + 14, "execution continued");
    assert!(count.get() >= 1, "FERR# asserted");
    assert_eq!(c.fpu.sw & SW_ES, SW_ES);
}

#[test]
fn task_switched_raises_nm() {
    let mut c = cpu(&[0xD9, 0xE8]);
    c.cr0 |= CR0_TS;
    assert_eq!(exec_one(&mut c), Err(Exception::new(exception::NM)));
    assert_eq!(c.fpu.tags, 0x5555, "nothing executed");
}

#[test]
fn fcomi_fcmov_fnstsw() {
    let code = [
        0xDB, 0xE3, // fninit
        0xD9, 0xE8, // fld1
        0xD9, 0xEE, // fldz
        0xDB, 0xF1, // fcomi st0, st1        ; 0 < 1: CF
        0xDA, 0xC1, // fcmovb st0, st1      ; taken
        0xDF, 0xE9, // fucomip st0, st1     ; equal: ZF, pop
        0xDF, 0xE0, // fnstsw ax
    ];
    let mut c = cpu(&code);
    c.run(4);
    assert!(c.flags.cf() && !c.flags.zf() && !c.flags.pf());
    c.run(3);
    assert!(!c.flags.cf() && c.flags.zf() && !c.flags.pf());
    assert_eq!(c.fpu.st(0), F80::ONE);
    assert_eq!(c.regs[EAX] & 0xFFFF, 7 << SW_TOP_SHIFT);
}

#[test]
fn fsave_frstor_fstenv_round_trip() {
    let code = [
        0xDB, 0xE3, // fninit
        0xD9, 0xEB, // fldpi
        0xD9, 0xE8, // fld1
        0x9B, 0xDD, 0x36, 0x00, 0x21, // fsave [0x2100]  (wait + fnsave)
        0xDD, 0x26, 0x00, 0x21, // frstor [0x2100]
        0x66, 0xDD, 0x36, 0x80, 0x21, // o32 fnsave [0x2180]
        0x66, 0xDD, 0x26, 0x80, 0x21, // o32 frstor [0x2180]
        0xD9, 0x36, 0x00, 0x22, // fnstenv [0x2200]
        0xD9, 0x26, 0x00, 0x22, // fldenv [0x2200]
    ];
    let mut c = cpu(&code);
    c.run(5);
    // After FSAVE the FPU is initialised.
    assert_eq!(c.fpu.tag_word(), 0xFFFF);
    // 16-bit real-mode image: CW, SW (TOP = 6), tags, linear FIP of fld1, FOP.
    assert_eq!(ram16(&c, 0x2100), 0x037F);
    assert_eq!(ram16(&c, 0x2102), 6 << SW_TOP_SHIFT);
    assert_eq!(ram16(&c, 0x2104), 0x0FFF);
    assert_eq!(ram16(&c, 0x2106), (CODE + 4) as u16);
    assert_eq!(ram16(&c, 0x2108) & 0x7FF, 0x1E8);
    // ST0 = 1.0 at offset 14.
    assert_eq!(&c.mem.ram[0x210E..0x2118], &F80::ONE.to_bytes());
    c.run(1);
    assert_eq!(c.fpu.st(0), F80::ONE);
    assert_eq!(c.fpu.st(1), constant(3, 0));
    assert_eq!(c.fpu.top, 6);
    c.run(2);
    // 32-bit image: CW with reserved ones, ST0 at offset 28.
    assert_eq!(
        u32::from_le_bytes(c.mem.ram[0x2180..0x2184].try_into().unwrap()),
        0xFFFF_037F
    );
    assert_eq!(&c.mem.ram[0x2180 + 28..0x2180 + 38], &F80::ONE.to_bytes());
    assert_eq!(c.fpu.st(1), constant(3, 0));
    c.run(1);
    // FNSTENV masks every exception; FLDENV restores the saved control word.
    assert_eq!(c.fpu.cw, 0x037F);
    c.run(1);
    assert_eq!(c.fpu.cw, 0x037F);
    assert_eq!(c.fpu.tag_word(), 0x0FFF);
}

#[test]
fn fxsave_fxrstor_and_alignment() {
    let code = [
        0xD9, 0xE8, // fld1
        0x0F, 0xAE, 0x06, 0x00, 0x24, // fxsave [0x2400]
        0xDB, 0xE3, // fninit
        0x0F, 0xAE, 0x0E, 0x00, 0x24, // fxrstor [0x2400]
        0x0F, 0xAE, 0x06, 0x08, 0x24, // fxsave [0x2408]: misaligned, #GP
    ];
    let mut c = cpu(&code);
    c.fpu.init();
    c.run(2);
    assert_eq!(c.mem.ram[0x2400 + FX_FTW], 0x80, "abridged tag: R7 in use");
    assert_eq!(
        &c.mem.ram[0x2400 + FX_ST0..0x2400 + FX_ST0 + 10],
        &F80::ONE.to_bytes()
    );
    c.run(2);
    assert_eq!(c.fpu.st(0), F80::ONE);
    assert_eq!(c.fpu.top, 7);
    assert_eq!(c.fpu.tag_word(), 0x3FFF);
    assert_eq!(exec_one(&mut c), Err(Exception::gp(0)), "misaligned FXSAVE");
}

#[test]
fn bcd_and_integer_stores() {
    let code = [
        0xDB, 0xE3, // fninit
        0xDB, 0x06, 0x00, 0x23, // fild dword [0x2300]
        0xDF, 0x36, 0x10, 0x23, // fbstp [0x2310]
        0xDF, 0x26, 0x10, 0x23, // fbld [0x2310]
        0xDB, 0x1E, 0x20, 0x23, // fistp dword [0x2320]
        0xD9, 0xE8, // fld1
        0xD9, 0xE0, // fchs
        0xDF, 0x16, 0x30, 0x23, // fist word [0x2330]
    ];
    let mut c = cpu(&code);
    c.mem.load(0x2300, &(-123_456_789i32).to_le_bytes());
    c.run(8);
    assert_eq!(
        &c.mem.ram[0x2310..0x231A],
        &[0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0, 0x80]
    );
    assert_eq!(
        i32::from_le_bytes(c.mem.ram[0x2320..0x2324].try_into().unwrap()),
        -123_456_789
    );
    assert_eq!(ram16(&c, 0x2330), 0xFFFF);
    assert_eq!(c.fpu.st(0), F80::ONE.chs());
}

#[test]
fn transcendental_and_misc_instructions_run() {
    let code = [
        0xDB, 0xE3, // fninit
        0xD9, 0xEC, // fldlg2
        0xD9, 0xF4, // fxtract            ; st0 = significand, st1 = -2
        0xD9, 0xF8, // fprem
        0xD9, 0xC9, // fxch st1
        0xD9, 0xFD, // fscale
        0xD9, 0xFB, // fsincos
        0xD9, 0xF3, // fpatan
        0xD9, 0xF2, // fptan
        0xD9, 0xF1, // fyl2x
        0xD9, 0xF0, // f2xm1
        0xD9, 0xFC, // frndint
        0xD9, 0xE4, // ftst
        0xD9, 0xE5, // fxam
        0xD9, 0xF7, // fincstp
        0xD9, 0xF6, // fdecstp
        0xDD, 0xC0, // ffree st0
        0xDA, 0xE9, // fucompp
    ];
    let mut c = cpu(&code);
    c.run(3);
    assert_eq!(c.fpu.st(1), float80::from_i64(-2));
    assert_eq!(c.fpu.st(0).exp, 0x3FFF);
    c.run(15);
    assert_eq!(c.eip, CODE + code.len() as u32);
    // ffree emptied ST0: fucompp underflows.
    assert_eq!(c.fpu.sw & (IE | SW_SF), IE | SW_SF);
}

#[test]
fn fpu_state_serialises() {
    let mut f = Fpu::new();
    f.init();
    f.push(F80::ONE);
    let json = serde_json::to_string(&f).unwrap();
    let g: Fpu = serde_json::from_str(&json).unwrap();
    assert_eq!(g.st(0), F80::ONE);
    assert_eq!(g.tag_word(), f.tag_word());
}
