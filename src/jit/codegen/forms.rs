//! The generic instruction forms: every operand size (8, 16, 32 bits), register or memory
//! operand, for the instructions that the interpreter's fast kinds do not single out (or cover
//! only for one size): the ALU group with ADC/SBB and TEST, INC/DEC, NOT/NEG, MOV, MOVZX/MOVSX,
//! XCHG, BSWAP, shifts and rotates by an immediate or CL, SETcc, CMOVcc, MUL/IMUL and DIV/IDIV.
//!
//! An instruction is first described ([`classify`]) as an operation on a destination and a
//! source operand at one width, then emitted from that description: register operands from the
//! locals, a memory operand through the inline segment check and TLB (its slow arm, and every
//! case the inline code does not take, such as a zero divisor, is the whole instruction through
//! `step`). The flags are stored in the interpreter's lazy form for the operation's width, with
//! the same values its handlers record (crate::cpu::flags), so any instruction after can read
//! them.

use super::*;
use crate::cpu::arith::{ADC, SBB};
use crate::cpu::decode::REP_NONE;
use crate::cpu::shift::{ROL, ROR, SAL, SAR, SHL, SHR};

/// An operand of a generic form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Opnd {
    /// A general register at the form's width (for bytes, AL..BH by the usual numbering).
    Reg(u8),
    /// The instruction's ModR/M memory operand.
    Mem,
    Imm(u32),
}

/// Where a shift's count comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Count {
    /// An immediate, already masked to 5 bits (1..=31: a count of 0 is not a generic form).
    Imm(u32),
    Cl,
}

/// The operation of a generic form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Op {
    /// The ALU group (crate::cpu::arith numbering, TEST included): dst = dst OP src.
    Alu(u8),
    /// INC (false) or DEC (true) dst.
    IncDec(bool),
    Not,
    Neg,
    Mov,
    /// MOVZX/MOVSX dst, src of this many bits.
    Movzx(u32),
    Movsx(u32),
    Xchg,
    Bswap,
    /// Shift or rotate dst (crate::cpu::shift numbering: ROL ROR SHL SHR SAR).
    Shift(u8, Count),
    /// SETcc dst (a byte), CMOVcc dst, src.
    Setcc(u8),
    Cmov(u8),
    /// MUL or IMUL src: the accumulator times src into the double-width accumulator.
    Mul {
        signed: bool,
    },
    /// IMUL dst, src (0F AF), or IMUL dst, src, imm (69, 6B: the immediate in `imm`).
    Imul {
        imm: Option<u32>,
    },
    /// DIV or IDIV src: the double-width accumulator by src.
    Div {
        signed: bool,
    },
    /// LODS, STOS, MOVS without a REP prefix (32-bit addresses, DF = 0 inline).
    Lods,
    Stos,
    Movs,
}

/// What [`Gen::generic`] emitted.
pub(super) enum Emitted {
    /// The whole instruction (a fused pair included).
    Whole,
    /// The compare of a fused pair (register operands): the caller emits its branch.
    CompareOnly,
}

/// A generic form: `op` on `dst` and `src` at `width` bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Form {
    pub op: Op,
    pub width: u32,
    pub dst: Opnd,
    pub src: Opnd,
}

impl Form {
    fn has_mem(&self) -> bool {
        self.dst == Opnd::Mem || self.src == Opnd::Mem
    }

    /// A string instruction: its memory operands are at ESI and EDI, not ModR/M's.
    fn is_string(&self) -> bool {
        matches!(self.op, Op::Lods | Op::Stos | Op::Movs)
    }

    /// The size of the memory operand in bytes (MOVZX/MOVSX read their narrower source).
    fn mem_size(&self) -> u32 {
        match self.op {
            Op::Movzx(bits) | Op::Movsx(bits) => bits / 8,
            Op::Setcc(_) => 1,
            _ => self.width / 8,
        }
    }

    /// Whether the memory operand is written (its access must allow a write).
    fn writes_mem(&self) -> bool {
        self.dst == Opnd::Mem
            && !matches!(self.op, Op::Alu(CMP) | Op::Alu(TEST))
            && !matches!(self.op, Op::Mul { .. } | Op::Div { .. })
    }

    /// Whether the memory operand's old value is needed.
    fn reads_mem(&self) -> bool {
        !(self.dst == Opnd::Mem && matches!(self.op, Op::Mov | Op::Setcc(_)))
    }

    /// How the form treats the flags (see [`FlagUse`]): a memory operand may fault, which
    /// makes it a reader.
    pub(super) fn flag_use(&self) -> FlagUse {
        if self.has_mem() {
            return FlagUse::Reads;
        }
        match self.op {
            Op::Alu(ADC) | Op::Alu(SBB) => FlagUse::Reads,
            Op::Alu(_) | Op::Neg | Op::Mul { .. } | Op::Imul { .. } => FlagUse::Writes,
            Op::Shift(SHL | SHR | SAR, Count::Imm(_)) => FlagUse::Writes,
            Op::Not | Op::Mov | Op::Movzx(_) | Op::Movsx(_) | Op::Xchg | Op::Bswap => FlagUse::None,
            // INC/DEC keep CF; rotates keep all but CF and OF; a count in CL may be 0 (no
            // change); SETcc and CMOVcc read them; a division may fault.
            _ => FlagUse::Reads,
        }
    }
}

/// Describe `i` as a generic form, if it is one (whatever its fast kind; a fused pair is
/// described by its compare).
pub(super) fn classify(i: &Instr) -> Option<Form> {
    let v = if i.op32 { 32 } else { 16 };
    let rm = if i.reg_form() {
        Opnd::Reg(i.rm)
    } else {
        Opnd::Mem
    };
    let reg = Opnd::Reg(i.reg);
    let form = |op, width, dst, src| {
        Some(Form {
            op,
            width,
            dst,
            src,
        })
    };
    let opc = i.opcode;
    match opc {
        0x00..=0x3F if opc & 7 <= 5 => {
            let op = (opc >> 3) as u8;
            match opc & 7 {
                0 => form(Op::Alu(op), 8, rm, reg),
                1 => form(Op::Alu(op), v, rm, reg),
                2 => form(Op::Alu(op), 8, reg, rm),
                3 => form(Op::Alu(op), v, reg, rm),
                4 => form(Op::Alu(op), 8, Opnd::Reg(EAX as u8), Opnd::Imm(i.imm)),
                _ => form(Op::Alu(op), v, Opnd::Reg(EAX as u8), Opnd::Imm(i.imm)),
            }
        }
        0x40..=0x4F => form(
            Op::IncDec(opc >= 0x48),
            v,
            Opnd::Reg((opc & 7) as u8),
            Opnd::Imm(0),
        ),
        0x80 | 0x82 => form(Op::Alu(i.reg), 8, rm, Opnd::Imm(i.imm)),
        0x81 | 0x83 => form(Op::Alu(i.reg), v, rm, Opnd::Imm(i.imm)),
        0x84 => form(Op::Alu(TEST), 8, rm, reg),
        0x85 => form(Op::Alu(TEST), v, rm, reg),
        0x86 => form(Op::Xchg, 8, rm, reg),
        0x87 => form(Op::Xchg, v, rm, reg),
        0x88 => form(Op::Mov, 8, rm, reg),
        0x89 => form(Op::Mov, v, rm, reg),
        0x8A => form(Op::Mov, 8, reg, rm),
        0x8B => form(Op::Mov, v, reg, rm),
        0x91..=0x97 => form(
            Op::Xchg,
            v,
            Opnd::Reg(EAX as u8),
            Opnd::Reg((opc & 7) as u8),
        ),
        // LODS/STOS/MOVS alone; the REP string instructions are `strings`' (REP LODS goes
        // through `step`, as CMPS/SCAS without REP do).
        0xA4 | 0xA5 if i.rep == REP_NONE => form(
            Op::Movs,
            if opc == 0xA4 { 8 } else { v },
            Opnd::Mem,
            Opnd::Mem,
        ),
        0xAA | 0xAB if i.rep == REP_NONE => form(
            Op::Stos,
            if opc == 0xAA { 8 } else { v },
            Opnd::Mem,
            Opnd::Reg(EAX as u8),
        ),
        0xAC | 0xAD if i.rep == REP_NONE => form(
            Op::Lods,
            if opc == 0xAC { 8 } else { v },
            Opnd::Reg(EAX as u8),
            Opnd::Mem,
        ),
        0xA8 => form(Op::Alu(TEST), 8, Opnd::Reg(EAX as u8), Opnd::Imm(i.imm)),
        0xA9 => form(Op::Alu(TEST), v, Opnd::Reg(EAX as u8), Opnd::Imm(i.imm)),
        0xB0..=0xB7 => form(Op::Mov, 8, Opnd::Reg((opc & 7) as u8), Opnd::Imm(i.imm)),
        0xB8..=0xBF => form(Op::Mov, v, Opnd::Reg((opc & 7) as u8), Opnd::Imm(i.imm)),
        0xC0..=0xC1 | 0xD0..=0xD3 if matches!(i.reg, ROL | ROR | SHL | SHR | SAL | SAR) => {
            let count = if opc >= 0xD2 {
                Count::Cl
            } else if i.imm & 0x1F != 0 {
                Count::Imm(i.imm & 0x1F)
            } else {
                return None;
            };
            let kind = if i.reg == SAL { SHL } else { i.reg };
            let width = if opc & 1 == 0 { 8 } else { v };
            form(Op::Shift(kind, count), width, rm, Opnd::Imm(0))
        }
        0xC6 if i.reg == 0 => form(Op::Mov, 8, rm, Opnd::Imm(i.imm)),
        0xC7 if i.reg == 0 => form(Op::Mov, v, rm, Opnd::Imm(i.imm)),
        0xF6 | 0xF7 => {
            let width = if opc == 0xF6 { 8 } else { v };
            let acc = Opnd::Reg(EAX as u8);
            match i.reg {
                0 | 1 => form(Op::Alu(TEST), width, rm, Opnd::Imm(i.imm)),
                2 => form(Op::Not, width, rm, Opnd::Imm(0)),
                3 => form(Op::Neg, width, rm, Opnd::Imm(0)),
                4 => form(Op::Mul { signed: false }, width, acc, rm),
                5 => form(Op::Mul { signed: true }, width, acc, rm),
                6 => form(Op::Div { signed: false }, width, acc, rm),
                _ => form(Op::Div { signed: true }, width, acc, rm),
            }
        }
        0xFE if i.reg < 2 => form(Op::IncDec(i.reg == 1), 8, rm, Opnd::Imm(0)),
        0xFF if i.reg < 2 => form(Op::IncDec(i.reg == 1), v, rm, Opnd::Imm(0)),
        0x69 | 0x6B => form(Op::Imul { imm: Some(i.imm) }, v, reg, rm),
        0x0F40..=0x0F4F => form(Op::Cmov((opc & 0xF) as u8), v, reg, rm),
        0x0F90..=0x0F9F => form(Op::Setcc((opc & 0xF) as u8), 8, rm, Opnd::Imm(0)),
        0x0FAF => form(Op::Imul { imm: None }, v, reg, rm),
        0x0FB6 => form(Op::Movzx(8), v, reg, rm),
        0x0FB7 => form(Op::Movzx(16), v, reg, rm),
        0x0FBE => form(Op::Movsx(8), v, reg, rm),
        0x0FBF => form(Op::Movsx(16), v, reg, rm),
        0x0FC8..=0x0FCF if i.op32 => form(Op::Bswap, 32, Opnd::Reg((opc & 7) as u8), Opnd::Imm(0)),
        _ => None,
    }
}

fn mask(width: u32) -> u32 {
    if width == 32 {
        u32::MAX
    } else {
        (1 << width) - 1
    }
}

impl Gen {
    /// Emit `i` (at `eip`, `next` after it) as the generic form `form`, or return None if it
    /// cannot (the caller hands it to `step`).
    pub(super) fn generic(
        &mut self,
        k: u32,
        i: &Instr,
        eip: u32,
        next: u32,
        form: &Form,
    ) -> Option<Emitted> {
        if form.has_mem() && !i.addr32 {
            return None;
        }
        // MOVZX/MOVSX of a word into a word is a plain move; it exists but is rare: leave it.
        if matches!(form.op, Op::Movzx(16) | Op::Movsx(16)) && form.width == 16 {
            return None;
        }
        let slow_arm = form.has_mem() || matches!(form.op, Op::Div { .. });
        if !k::is_fused(i) {
            if slow_arm {
                self.with_memory(i, eip, |g| g.form_body(i, form));
            } else {
                self.inline_count += 1;
                self.form_body(i, form);
                self.sync.pending += 1;
            }
            return Some(Emitted::Whole);
        }
        // A compare fused with the Jcc after it. Its flags are always stored (the branch may
        // leave the block), and the branch reads them from there.
        if !slow_arm {
            self.inline_count += 1;
            self.form_body(i, form);
            return Some(Emitted::CompareOnly);
        }
        // With memory: the fast arm takes the branch itself; not taken, both arms retire the
        // pair and go on.
        let target = next.wrapping_add(i.imm2);
        self.with_memory_retiring(i, eip, 2, |g| {
            g.form_body(i, form);
            g.take_branch(k, i, target, next);
        });
        Some(Emitted::Whole)
    }

    /// The form's code. A memory operand is reached first (its value in VAL when read, its
    /// address in ADDR); this runs inside `with_memory`'s fast arm when the form has one, so a
    /// `br 0` at this level takes the slow arm.
    fn form_body(&mut self, i: &Instr, f: &Form) {
        if f.is_string() {
            self.string_form(i, f);
            return;
        }
        if f.has_mem() {
            self.ea(i);
            self.access(i.seg as u8, f.mem_size(), f.writes_mem());
            if f.reads_mem() {
                self.load(f.mem_size());
                self.ins().local_set(VAL);
            }
        }
        let w = f.width;
        match f.op {
            Op::Alu(op) => {
                self.read(f.dst, w);
                self.ins().local_set(T3);
                self.read(f.src, w);
                self.ins().local_set(T4);
                self.alu_values_w(op, Src::Local(T3), Src::Local(T4), w);
                if op != CMP && op != TEST {
                    self.ins().local_get(T0);
                    self.write(f.dst, w);
                }
            }
            Op::IncDec(dec) => {
                self.read(f.dst, w);
                self.ins().local_set(T3);
                self.incdec_value(Src::Local(T3), dec, w);
                self.ins().local_get(T0);
                self.write(f.dst, w);
            }
            Op::Not => {
                self.read(f.dst, w);
                self.ins().i32_const(-1).i32_xor();
                self.write(f.dst, w);
            }
            Op::Neg => {
                self.read(f.dst, w);
                self.ins().local_set(T4);
                self.alu_values_w(SUB, Src::Imm(0), Src::Local(T4), w);
                self.ins().local_get(T0);
                self.write(f.dst, w);
            }
            Op::Mov => {
                self.read(f.src, w);
                self.write(f.dst, w);
            }
            Op::Movzx(bits) => {
                self.read(f.src, bits);
                self.write(f.dst, w);
            }
            Op::Movsx(bits) => {
                self.read(f.src, bits);
                let s = 32 - bits as i32;
                self.ins().i32_const(s).i32_shl().i32_const(s).i32_shr_s();
                self.write(f.dst, w);
            }
            Op::Xchg => {
                self.read(f.dst, w);
                self.ins().local_set(T3);
                self.read(f.src, w);
                self.write(f.dst, w);
                self.ins().local_get(T3);
                self.write(f.src, w);
            }
            Op::Bswap => {
                // ((v >> 24) | (v << 24)) | ((v >> 8) & 0xFF00) | ((v << 8) & 0xFF0000)
                self.read(f.dst, 32);
                self.ins()
                    .local_tee(T3)
                    .i32_const(24)
                    .i32_shr_u()
                    .local_get(T3)
                    .i32_const(24)
                    .i32_shl()
                    .i32_or()
                    .local_get(T3)
                    .i32_const(8)
                    .i32_shr_u()
                    .i32_const(0xFF00)
                    .i32_and()
                    .i32_or()
                    .local_get(T3)
                    .i32_const(8)
                    .i32_shl()
                    .i32_const(0xFF_0000)
                    .i32_and()
                    .i32_or();
                self.write(f.dst, 32);
            }
            Op::Shift(kind, count) => self.shift_form(f, kind, count),
            Op::Setcc(cc) => {
                self.cond(cc);
                self.write(f.dst, 8);
            }
            Op::Cmov(cc) => {
                // The source is read whatever the condition (a memory source may fault).
                self.read(f.src, w);
                self.ins().local_set(T3);
                self.fresh(f.dst, w);
                self.cond(cc);
                self.ins().if_(BlockType::Empty);
                self.depth += 1;
                self.ins().local_get(T3);
                self.write(f.dst, w);
                self.ins().end();
                self.depth -= 1;
            }
            Op::Mul { signed } => self.mul_form(f, signed),
            Op::Imul { imm } => {
                self.read(f.src, w);
                self.sign_extend(w);
                self.ins().i64_extend_i32_s();
                match imm {
                    Some(v) => {
                        self.ins().i64_const((v & mask(w)) as i32 as i64);
                        // The immediate is sign-extended from the operand width.
                        self.i64_sign_extend(w);
                    }
                    None => {
                        self.read(f.dst, w);
                        self.sign_extend(w);
                        self.ins().i64_extend_i32_s();
                    }
                }
                self.ins().i64_mul().local_set(W0);
                self.product_flags(w, true);
                self.ins().local_get(T0);
                self.write(f.dst, w);
            }
            Op::Div { signed } => self.div_form(f, signed),
            Op::Lods | Op::Stos | Op::Movs => unreachable!("string forms return above"),
        }
    }

    /// Load register operand `o`'s local now if the Cpu holds its newest value: before code
    /// that runs only sometimes (an `if`) reads or writes it, since what the generator knows
    /// about the locals must hold on every path.
    fn fresh(&mut self, o: Opnd, width: u32) {
        if let Opnd::Reg(r) = o {
            let full = if width == 8 { r & 3 } else { r & 7 };
            self.load_if_stale(full);
        }
    }

    /// LODS, STOS, MOVS (no REP, 32-bit addresses): the slow arm unless DF = 0; the source at
    /// seg:ESI (DS unless overridden), the destination at ES:EDI, each through the segment
    /// check and the TLB; then ESI and EDI step forward.
    fn string_form(&mut self, i: &Instr, f: &Form) {
        let size = f.width / 8;
        self.slow_arm_if_flags(crate::cpu::flags::DF);
        let (esi, edi) = (crate::cpu::ESI as u8, crate::cpu::EDI as u8);
        if f.op != Op::Stos {
            self.get(esi);
            self.access(i.seg as u8, size, false);
            self.load(size);
            self.ins().local_set(VAL);
        }
        if f.op == Op::Lods {
            self.ins().local_get(VAL);
            self.write(Opnd::Reg(EAX as u8), f.width);
        } else {
            self.get(edi);
            self.access(Segment::ES as u8, size, true);
            if f.op == Op::Movs {
                self.ins().local_get(VAL);
            } else {
                self.read(Opnd::Reg(EAX as u8), f.width);
            }
            self.write(Opnd::Mem, f.width);
        }
        for (r, used) in [(esi, f.op != Op::Stos), (edi, f.op != Op::Lods)] {
            if used {
                self.get(r);
                self.ins().i32_const(size as i32).i32_add();
                self.set_reg(r);
            }
        }
    }

    /// Push operand `o` at `width` bits, zero-extended.
    fn read(&mut self, o: Opnd, width: u32) {
        match o {
            Opnd::Reg(r) => match width {
                8 => self.get8(r),
                16 => {
                    self.get(r);
                    self.ins().i32_const(0xFFFF).i32_and();
                }
                _ => self.get(r),
            },
            Opnd::Mem => {
                self.ins().local_get(VAL);
            }
            Opnd::Imm(v) => {
                self.ins().i32_const((v & mask(width)) as i32);
            }
        }
    }

    /// Write the value on the stack to operand `o` at `width` bits (the rest of a register
    /// kept; memory at ADDR).
    fn write(&mut self, o: Opnd, width: u32) {
        match o {
            Opnd::Reg(r) => match width {
                8 => self.set8(r),
                16 => {
                    self.ins().i32_const(0xFFFF).i32_and().local_set(T1);
                    self.get(r);
                    self.ins()
                        .i32_const(0xFFFF_0000u32 as i32)
                        .i32_and()
                        .local_get(T1)
                        .i32_or();
                    self.set_reg(r);
                }
                _ => self.set_reg(r),
            },
            Opnd::Mem => {
                self.ins().local_set(T1).local_get(ADDR).local_get(T1);
                self.store(width / 8);
            }
            Opnd::Imm(_) => unreachable!("an immediate is never a destination"),
        }
    }

    /// Sign-extend the `width`-bit value on the stack to 32 bits.
    fn sign_extend(&mut self, width: u32) {
        if width < 32 {
            let s = 32 - width as i32;
            self.ins().i32_const(s).i32_shl().i32_const(s).i32_shr_s();
        }
    }

    /// Sign-extend the i64 on the stack from its low `width` bits.
    fn i64_sign_extend(&mut self, width: u32) {
        if width < 64 {
            let s = 64 - width as i64;
            self.ins().i64_const(s).i64_shl().i64_const(s).i64_shr_s();
        }
    }

    /// Push the dividend of DIV/IDIV at `width` bits as an i64: AX for bytes, else DX:AX or
    /// EDX:EAX (sign-extended for IDIV).
    fn dividend(&mut self, width: u32, signed: bool) {
        if width == 8 {
            self.read(Opnd::Reg(EAX as u8), 16);
            self.ins().i64_extend_i32_u();
        } else {
            self.read(Opnd::Reg(EDX as u8), width);
            self.ins()
                .i64_extend_i32_u()
                .i64_const(width as i64)
                .i64_shl();
            self.read(Opnd::Reg(EAX as u8), width);
            self.ins().i64_extend_i32_u().i64_or();
        }
        if signed {
            self.i64_sign_extend(2 * width);
        }
    }

    /// Store the flags of a `width`-bit result in T0 with its carry vector in T1
    /// (Flags::set_lazy), if they are needed.
    pub(super) fn store_flags_w(&mut self, width: u32) {
        if !self.store_flags {
            return;
        }
        let sh = 32 - width as i32;
        self.ins().local_get(CPU).local_get(T0);
        if sh != 0 {
            self.ins().i32_const(sh).i32_shl();
        }
        self.ins()
            .i32_store(mem32(RES))
            .local_get(CPU)
            .local_get(T1);
        if sh != 0 {
            self.ins().i32_const(sh).i32_shl();
        }
        self.ins().i32_store(mem32(CV));
        self.store_low(width as i32);
    }

    /// Store flags given explicitly (Flags::set_explicit with AF = 0): the `width`-bit result
    /// in T0, and T1 already the stored carry vector (CF at bit 31, CF ^ OF at bit 30).
    fn store_explicit(&mut self, width: u32) {
        if !self.store_flags {
            return;
        }
        let sh = 32 - width as i32;
        self.ins().local_get(CPU).local_get(T0);
        if sh != 0 {
            self.ins().i32_const(sh).i32_shl();
        }
        self.ins()
            .i32_store(mem32(RES))
            .local_get(CPU)
            .local_get(T1)
            .i32_store(mem32(CV));
        // AF (carry bit 3) reads T1's bit 3, which is 0 here.
        self.store_low(width as i32);
    }

    /// T1 = (CF << 31) | ((CF ^ OF) << 30) from the 0/1 values of CF in T3 and OF in T4.
    fn cf_of_vector(&mut self) {
        self.ins()
            .local_get(T3)
            .i32_const(31)
            .i32_shl()
            .local_get(T3)
            .local_get(T4)
            .i32_xor()
            .i32_const(30)
            .i32_shl()
            .i32_or()
            .local_set(T1);
    }

    /// Shifts and rotates (crate::cpu::shift::shift_op): a count of 0 (from CL) changes
    /// nothing, not even the flags.
    fn shift_form(&mut self, f: &Form, kind: u8, count: Count) {
        let w = f.width as i32;
        let top = w - 1;
        let m = mask(f.width) as i32;
        match count {
            Count::Imm(c) => {
                self.ins().i32_const(c as i32).local_set(CNT);
            }
            Count::Cl => {
                self.fresh(f.dst, f.width);
                self.get(ECX as u8);
                self.ins().i32_const(0x1F).i32_and().local_tee(CNT);
                self.ins().if_(BlockType::Empty);
                self.depth += 1;
            }
        }
        // T2 = a (zero-extended)
        self.read(f.dst, f.width);
        self.ins().local_set(T2);
        match kind {
            SHL => {
                // r = (a << c) & mask; CF = bit w-1 of a << (c - 1); OF = top(r) ^ CF
                self.ins()
                    .local_get(T2)
                    .local_get(CNT)
                    .i32_shl()
                    .i32_const(m)
                    .i32_and()
                    .local_set(T0)
                    .local_get(T2)
                    .local_get(CNT)
                    .i32_const(1)
                    .i32_sub()
                    .i32_shl()
                    .i32_const(top)
                    .i32_shr_u()
                    .i32_const(1)
                    .i32_and()
                    .local_set(T3)
                    .local_get(T0)
                    .i32_const(top)
                    .i32_shr_u()
                    .local_get(T3)
                    .i32_xor()
                    .local_set(T4);
            }
            SHR => {
                // r = a >> c; CF = bit c-1 of a; OF = top(a)
                self.ins()
                    .local_get(T2)
                    .local_get(CNT)
                    .i32_shr_u()
                    .local_set(T0)
                    .local_get(T2)
                    .local_get(CNT)
                    .i32_const(1)
                    .i32_sub()
                    .i32_shr_u()
                    .i32_const(1)
                    .i32_and()
                    .local_set(T3)
                    .local_get(T2)
                    .i32_const(top)
                    .i32_shr_u()
                    .local_set(T4);
            }
            SAR => {
                // s = sext(a); r = (s >> c) & mask; CF = bit c-1 of s; OF = 0
                self.ins().local_get(T2);
                self.sign_extend(f.width);
                self.ins()
                    .local_tee(T2)
                    .local_get(CNT)
                    .i32_shr_s()
                    .i32_const(m)
                    .i32_and()
                    .local_set(T0)
                    .local_get(T2)
                    .local_get(CNT)
                    .i32_const(1)
                    .i32_sub()
                    .i32_shr_s()
                    .i32_const(1)
                    .i32_and()
                    .local_set(T3)
                    .i32_const(0)
                    .local_set(T4);
            }
            _ => {
                // ROL/ROR by k = c mod w (shifts are mod 32 in wasm, which covers k = 0 at
                // 32 bits; at 8 and 16 bits the bits shifted past the width are masked off).
                self.ins().local_get(CNT);
                if w != 32 {
                    self.ins().i32_const(w).i32_rem_u();
                }
                self.ins().local_set(CNT);
                let (first, second) = if kind == ROL { (Shl, Shr) } else { (Shr, Shl) };
                self.ins().local_get(T2).local_get(CNT);
                first.emit(self);
                self.ins()
                    .local_get(T2)
                    .i32_const(w)
                    .local_get(CNT)
                    .i32_sub();
                second.emit(self);
                self.ins().i32_or().i32_const(m).i32_and().local_set(T0);
                if kind == ROL {
                    // CF = bit 0 of r; OF = top(r) ^ CF
                    self.ins()
                        .local_get(T0)
                        .i32_const(1)
                        .i32_and()
                        .local_set(T3)
                        .local_get(T0)
                        .i32_const(top)
                        .i32_shr_u()
                        .local_get(T3)
                        .i32_xor()
                        .local_set(T4);
                } else {
                    // CF = top(r); OF = top(r) ^ bit top-1 of r
                    self.ins()
                        .local_get(T0)
                        .i32_const(top)
                        .i32_shr_u()
                        .local_set(T3)
                        .local_get(T0)
                        .i32_const(top - 1)
                        .i32_shr_u()
                        .i32_const(1)
                        .i32_and()
                        .local_get(T3)
                        .i32_xor()
                        .local_set(T4);
                }
            }
        }
        self.cf_of_vector();
        if kind == ROL || kind == ROR {
            // Only CF and OF change: the other flags keep their stored form.
            if self.store_flags {
                self.ins().local_get(CPU).local_get(T1).i32_store(mem32(CV));
            }
        } else {
            self.store_explicit(f.width);
        }
        self.ins().local_get(T0);
        self.write(f.dst, f.width);
        if count == Count::Cl {
            self.ins().end();
            self.depth -= 1;
        }
    }

    /// CF = OF = whether the product in W0 does not fit in `width` bits (signed or unsigned);
    /// T0 = its low half; the flags stored as Flags::set_explicit does for a multiplication.
    fn product_flags(&mut self, width: u32, signed: bool) {
        self.ins().local_get(W0).i32_wrap_i64();
        if width < 32 {
            self.ins().i32_const(mask(width) as i32).i32_and();
        }
        self.ins().local_set(T0);
        // overflow: the product differs from its low half extended back
        self.ins().local_get(W0);
        if signed {
            self.i64_sign_extend(width);
        } else {
            self.ins().i64_const(mask(width) as i64).i64_and();
        }
        self.ins()
            .local_get(W0)
            .i64_ne()
            .local_tee(T3)
            .i32_const(31)
            .i32_shl()
            .local_set(T1);
        self.store_explicit(width);
    }

    /// MUL/IMUL src: AX = AL * src (bytes), else DX:AX or EDX:EAX = the accumulator * src.
    fn mul_form(&mut self, f: &Form, signed: bool) {
        let w = f.width;
        for o in [Opnd::Reg(EAX as u8), f.src] {
            self.read(o, w);
            if signed {
                self.sign_extend(w);
                self.ins().i64_extend_i32_s();
            } else {
                self.ins().i64_extend_i32_u();
            }
        }
        self.ins().i64_mul().local_set(W0);
        self.product_flags(w, signed);
        // The high half: W0 >> w.
        self.ins()
            .local_get(W0)
            .i64_const(w as i64)
            .i64_shr_u()
            .i32_wrap_i64()
            .local_set(T4);
        if w == 8 {
            // AX = high:low
            self.ins()
                .local_get(T4)
                .i32_const(8)
                .i32_shl()
                .local_get(T0)
                .i32_or();
            self.write(Opnd::Reg(EAX as u8), 16);
        } else {
            self.ins().local_get(T0);
            self.write(Opnd::Reg(EAX as u8), w);
            self.ins().local_get(T4);
            self.write(Opnd::Reg(EDX as u8), w);
        }
    }

    /// DIV/IDIV src: the quotient and remainder of the double-width accumulator (AX for
    /// bytes) by src. A zero divisor, a divisor of -1 (IDIV) and a quotient too wide take the
    /// slow arm, where the interpreter raises #DE. Flags are left alone, as the interpreter
    /// leaves them.
    fn div_form(&mut self, f: &Form, signed: bool) {
        let w = f.width;
        // W1 = divisor
        self.read(f.src, w);
        if signed {
            self.sign_extend(w);
            self.ins().i64_extend_i32_s();
        } else {
            self.ins().i64_extend_i32_u();
        }
        self.ins().local_tee(W1).i64_eqz();
        self.br_if_unlikely(0);
        if signed {
            self.ins().local_get(W1).i64_const(-1).i64_eq();
            self.br_if_unlikely(0);
        }
        // W0 = dividend
        self.dividend(w, signed);
        self.ins().local_tee(W0).local_get(W1);
        if signed {
            self.ins().i64_div_s();
        } else {
            self.ins().i64_div_u();
        }
        // The quotient must fit: W0 := quotient; out of range -> slow arm.
        self.ins().local_set(W0);
        if signed {
            self.ins().local_get(W0).local_get(W0);
            self.i64_sign_extend(w);
            self.ins().i64_ne();
        } else {
            self.ins()
                .local_get(W0)
                .i64_const(mask(w) as i64)
                .i64_gt_u();
        }
        self.br_if_unlikely(0);
        // The remainder from the dividend again.
        self.dividend(w, signed);
        self.ins().local_get(W1);
        if signed {
            self.ins().i64_rem_s();
        } else {
            self.ins().i64_rem_u();
        }
        self.ins().i32_wrap_i64().local_set(T4);
        if w == 8 {
            // AL = quotient, AH = remainder
            self.ins()
                .local_get(T4)
                .i32_const(0xFF)
                .i32_and()
                .i32_const(8)
                .i32_shl()
                .local_get(W0)
                .i32_wrap_i64()
                .i32_const(0xFF)
                .i32_and()
                .i32_or();
            self.write(Opnd::Reg(EAX as u8), 16);
        } else {
            self.ins().local_get(W0).i32_wrap_i64();
            self.write(Opnd::Reg(EAX as u8), w);
            self.ins().local_get(T4);
            self.write(Opnd::Reg(EDX as u8), w);
        }
    }
}

/// A shift direction, for rotates built from two shifts.
#[derive(Clone, Copy)]
enum ShiftDir {
    Shl,
    Shr,
}
use ShiftDir::{Shl, Shr};

impl ShiftDir {
    fn emit(self, g: &mut Gen) {
        match self {
            Shl => g.ins().i32_shl(),
            Shr => g.ins().i32_shr_u(),
        };
    }
}
