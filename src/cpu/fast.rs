//! The frequent instruction forms, run inline by the run loop.
//!
//! Every instruction has a handler pointer chosen at decode time. For the forms that make up most
//! of what compiled 32-bit code executes (register and memory moves, the ALU group, INC/DEC,
//! PUSH/POP, LEA, MUL/DIV, conditional and direct jumps, CALL/RET, a compare fused with the Jcc
//! after it, and a CDQ folded into the IDIV after it), the decoder also records a kind number
//! ([`classify`], [`fuse`], [`fold_cdq`]), and the run
//! loop ([`run`]) dispatches on it with one dense `match` that calls the very same handler
//! functions, inlined. In WebAssembly that `match` is a single `br_table` inside the run loop,
//! where an indirect call costs a table bounds check, a signature check and a call frame;
//! natively it saves the call and lets the compiler keep the CPU pointer in a register. The
//! semantics cannot drift: each arm is the handler itself. The kinds are numbered densely (no
//! ranges, no gaps) so that the `match` stays one jump table.
//!
//! The set is kept to the forms that are frequent in real code (a histogram of the benchmark
//! guest: each at least about 0.04% of executed instructions, plus DIV beside IDIV and the
//! plain form of every fused compare): under V8 every arm also costs
//! register spills in the loop on every instruction, whether or not it runs (the CDQ-IDIV arm
//! bought the trial-division benchmark 1.09x in Chromium and cost gzip about 2%, in
//! `make bench-ab`). Other forms, and
//! all 16-bit operand forms except the moves to and from memory, take the handler pointer.

use super::decode::{Instr, PRE_MOV, REG_FORM};
use super::exception::{Exception, Fault};
use super::operand::{Mem32Rm, RegRm, Width, W16, W32, W8};
use super::{arith, control, data, muldiv, shift, Cpu, Segment, ESP};

/// The fast form of an instruction: which arm of the run loop's `match` runs it. A field-less
/// enum, so that the `match` covers every value and compiles to a jump table without a bounds
/// check. The variants keep the constant-style names the rest of the crate uses them by.
///
/// ALU_<form>_<op>: OP r/m32, r32 (RR register r/m, M_R memory); OP r32, r/m32 (R_R register,
/// R_M memory); OP r/m32, imm (R_I register r/m, M_I memory); OP EAX, imm32 (A_I).
/// FUSED_<kind>: that compare fused with the Jcc after it. The numbering is dense, plain kinds
/// first, then the fused ones.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Not a fast form: call the handler pointer.
    NONE = 0,
    MOV_RM_R_REG,
    MOV_RM_R_MEM,
    MOV_R_RM_MEM,
    MOV_R_IMM,
    MOV_RM_IMM_MEM,
    MOV_RM_R8_MEM,
    MOV_R_RM8_MEM,
    MOVZX_B_REG,
    MOVZX_B_MEM,
    MOVZX_W_REG,
    MOVZX_W_MEM,
    LEA,
    INC_R,
    DEC_R,
    INC_M,
    DEC_M,
    PUSH_R,
    POP_R,
    JCC,
    JMP_REL,
    CALL_REL,
    RET,
    IMUL_R_RM_REG,
    CMP_M_R,
    CMP_M_I,
    TEST_R_I,
    CMP_RM8_I_REG,
    CMP_RM8_I_MEM,
    TEST_RR8,
    SHIFT_I_R_ROL,
    SHIFT_I_R_ROR,
    SHIFT_I_R_SHL,
    SHIFT_I_R_SHR,
    SHIFT_I_R_SAR,
    SHIFT_CL_R_SHL,
    SHIFT_CL_R_SHR,
    ALU_RR_ADD,
    ALU_RR_SBB,
    ALU_RR_AND,
    ALU_RR_SUB,
    ALU_RR_XOR,
    ALU_RR_CMP,
    ALU_RR_TEST,
    ALU_R_M_ADD,
    ALU_R_M_OR,
    ALU_R_M_SUB,
    ALU_R_M_XOR,
    ALU_R_M_CMP,
    ALU_M_R_ADD,
    ALU_M_R_SUB,
    ALU_R_I_ADD,
    ALU_R_I_OR,
    ALU_R_I_AND,
    ALU_R_I_SUB,
    ALU_R_I_CMP,
    ALU_M_I_ADD,
    ALU_A_I_ADD,
    ALU_A_I_AND,
    ALU_A_I_CMP,
    ALU_A_I_TEST,
    CDQ,
    NOT_R,
    NEG_R,
    DIV_R,
    MUL_R,
    IDIV_R,
    SETCC_R,
    CMOV_R,
    ALU8_M_R_CMP,
    ALU8_R_I_AND,
    TEST8_A_I,
    MOV_RM_R8_REG,
    MOV_RM_IMM8_MEM,
    TEST8_R_I,
    TEST8_M_I,
    MOV_RM_R16_MEM,
    MOV_R_RM16_MEM,
    MOVSX_W_MEM,
    /// CDQ and the `IDIV r32` right after it ([`fold_cdq`]): `len` and `end` are the IDIV's.
    CDQ_IDIV_R,
    FUSED_ALU_RR_CMP,
    FUSED_ALU_RR_TEST,
    FUSED_ALU_R_I_CMP,
    FUSED_ALU_A_I_CMP,
    FUSED_ALU_R_M_CMP,
    FUSED_CMP_M_R,
    FUSED_CMP_M_I,
    FUSED_TEST_RR8,
    FUSED_CMP_RM8_I_REG,
    FUSED_CMP_RM8_I_MEM,
    FUSED_DEC_R,
    FUSED_ALU_R_I_AND,
    FUSED_TEST_R_I,
    FUSED_ALU8_M_R_CMP,
    FUSED_TEST8_R_I,
    FUSED_TEST8_M_I,
    // Register forms whose flags nothing reads (see [`drop_dead_flags`]): the result only.
    ALU_R_I_ADD_NF,
    ALU_R_I_OR_NF,
    ALU_R_I_AND_NF,
    ALU_R_I_SUB_NF,
    ALU_RR_ADD_NF,
    ALU_RR_AND_NF,
    ALU_RR_SUB_NF,
    ALU_RR_XOR_NF,
    INC_R_NF,
    DEC_R_NF,
    IMUL_R_RM_REG_NF,
    SHIFT_I_R_SHL_NF,
    SHIFT_I_R_SHR_NF,
    SHIFT_I_R_SAR_NF,
}
pub use Kind::*;
/// The number of kinds (they are 1..=KINDS, densely).
#[cfg(test)]
const KINDS: u8 = FUSED_TEST8_M_I as u8;

/// The flag-setting instructions that fuse with a following Jcc (compares, and the ALU
/// operations loops end with), and the fused kind of each.
const FUSABLE: [(Kind, Kind); 16] = [
    (ALU_RR_CMP, FUSED_ALU_RR_CMP),
    (ALU_RR_TEST, FUSED_ALU_RR_TEST),
    (ALU_R_I_CMP, FUSED_ALU_R_I_CMP),
    (ALU_A_I_CMP, FUSED_ALU_A_I_CMP),
    (ALU_R_M_CMP, FUSED_ALU_R_M_CMP),
    (CMP_M_R, FUSED_CMP_M_R),
    (CMP_M_I, FUSED_CMP_M_I),
    (TEST_RR8, FUSED_TEST_RR8),
    (CMP_RM8_I_REG, FUSED_CMP_RM8_I_REG),
    (CMP_RM8_I_MEM, FUSED_CMP_RM8_I_MEM),
    (DEC_R, FUSED_DEC_R),
    (ALU_R_I_AND, FUSED_ALU_R_I_AND),
    (TEST_R_I, FUSED_TEST_R_I),
    (ALU8_M_R_CMP, FUSED_ALU8_M_R_CMP),
    (TEST8_R_I, FUSED_TEST8_R_I),
    (TEST8_M_I, FUSED_TEST8_M_I),
];

/// The ALU kinds of one form in operation order (ADD OR ADC SBB AND SUB XOR CMP TEST).
const ALU_RR: [Kind; 9] = [
    ALU_RR_ADD,
    NONE,
    NONE,
    ALU_RR_SBB,
    ALU_RR_AND,
    ALU_RR_SUB,
    ALU_RR_XOR,
    ALU_RR_CMP,
    ALU_RR_TEST,
];
const ALU_R_M: [Kind; 8] = [
    ALU_R_M_ADD,
    ALU_R_M_OR,
    NONE,
    NONE,
    NONE,
    ALU_R_M_SUB,
    ALU_R_M_XOR,
    ALU_R_M_CMP,
];
const ALU_M_R: [Kind; 7] = [ALU_M_R_ADD, NONE, NONE, NONE, NONE, ALU_M_R_SUB, NONE];
const ALU_M_I: [Kind; 7] = [ALU_M_I_ADD, NONE, NONE, NONE, NONE, NONE, NONE];
const ALU_R_I: [Kind; 8] = [
    ALU_R_I_ADD,
    ALU_R_I_OR,
    NONE,
    NONE,
    ALU_R_I_AND,
    ALU_R_I_SUB,
    NONE,
    ALU_R_I_CMP,
];
const ALU_A_I: [Kind; 9] = [
    ALU_A_I_ADD,
    NONE,
    NONE,
    NONE,
    ALU_A_I_AND,
    NONE,
    NONE,
    ALU_A_I_CMP,
    ALU_A_I_TEST,
];

/// The fast kind of a decoded instruction, or [`NONE`]. `is_reg` says whether its ModR/M byte
/// (if any) selected a register operand. Called only for instructions that decoded without
/// error (so, for example, LOCK on a register form never gets here).
pub fn classify(i: &Instr, is_reg: bool) -> Kind {
    let op = i.opcode;
    let mem = !is_reg;
    // The ALU operation of opcodes 00-3D is bits 3-5; of 80-83, the ModR/M reg field.
    let alu = ((op >> 3) & 7) as usize;
    let group = (i.reg & 7) as usize;
    // Byte forms do not depend on the operand size.
    match op {
        0x88 if mem => return MOV_RM_R8_MEM,
        0x88 => return MOV_RM_R8_REG,
        0x8A if mem => return MOV_R_RM8_MEM,
        // C6 /1-/7 are undefined (the handler raises #UD).
        0xC6 if mem && i.reg == 0 => return MOV_RM_IMM8_MEM,
        0x80 if group == arith::CMP as usize => {
            return if mem { CMP_RM8_I_MEM } else { CMP_RM8_I_REG }
        }
        0x80 if group == arith::AND as usize && is_reg => return ALU8_R_I_AND,
        0x84 if is_reg => return TEST_RR8,
        0x38 if mem => return ALU8_M_R_CMP,
        0xA8 => return TEST8_A_I,
        // TEST r/m8, imm8 (F6 /0 and its alias /1).
        0xF6 if i.reg <= 1 => return if mem { TEST8_M_I } else { TEST8_R_I },
        0x0F90..=0x0F9F if is_reg => return SETCC_R,
        _ => {}
    }
    if !i.op32 {
        // 16-bit operands: the moves only.
        return match op {
            0x89 if mem => MOV_RM_R16_MEM,
            0x8B if mem => MOV_R_RM16_MEM,
            _ => NONE,
        };
    }
    match op {
        0x89 if is_reg => MOV_RM_R_REG,
        0x89 => MOV_RM_R_MEM,
        0x8B if mem => MOV_R_RM_MEM,
        0xB8..=0xBF => MOV_R_IMM,
        // C7 /1-/7 are undefined (the handler raises #UD).
        0xC7 if mem && i.reg == 0 => MOV_RM_IMM_MEM,
        0x0FB6 if is_reg => MOVZX_B_REG,
        0x0FB6 => MOVZX_B_MEM,
        0x0FB7 if is_reg => MOVZX_W_REG,
        0x0FB7 => MOVZX_W_MEM,
        0x0FBF if mem => MOVSX_W_MEM,
        // The register form of LEA is #UD.
        0x8D if mem => LEA,
        0x40..=0x47 => INC_R,
        0x48..=0x4F => DEC_R,
        0xFF if mem && i.reg == 0 => INC_M,
        0xFF if mem && i.reg == 1 => DEC_M,
        // Shifts by an immediate (C1; D1 is by 1) and by CL (D3), register forms.
        0xC1 | 0xD1 | 0xD3 if mem => NONE,
        0xC1 | 0xD1 => match i.reg {
            shift::ROL => SHIFT_I_R_ROL,
            shift::ROR => SHIFT_I_R_ROR,
            shift::SHL => SHIFT_I_R_SHL,
            shift::SHR => SHIFT_I_R_SHR,
            shift::SAR => SHIFT_I_R_SAR,
            _ => NONE,
        },
        0xD3 => match i.reg {
            shift::SHL => SHIFT_CL_R_SHL,
            shift::SHR => SHIFT_CL_R_SHR,
            _ => NONE,
        },
        // TEST r/m32, imm32 (F7 /0 and its alias /1).
        0xF7 if i.reg <= 1 && is_reg => TEST_R_I,
        0x50..=0x57 => PUSH_R,
        0x58..=0x5F => POP_R,
        0x70..=0x7F | 0x0F80..=0x0F8F => JCC,
        0xE9 | 0xEB => JMP_REL,
        0xE8 => CALL_REL,
        0xC3 => RET,
        0x0FAF if is_reg => IMUL_R_RM_REG,
        // OP r/m, r (low bits 001) and TEST r/m, r (85).
        0x01 | 0x09 | 0x11 | 0x19 | 0x21 | 0x29 | 0x31 | 0x39 if is_reg => ALU_RR[alu],
        0x85 if is_reg => ALU_RR_TEST,
        0x39 => CMP_M_R,
        0x01 | 0x09 | 0x11 | 0x19 | 0x21 | 0x29 | 0x31 => ALU_M_R[alu],
        // OP r, r/m (low bits 011), memory forms (compilers emit 01-39 between registers).
        0x03 | 0x0B | 0x13 | 0x1B | 0x23 | 0x2B | 0x33 | 0x3B if mem => ALU_R_M[alu],
        0x81 | 0x83 if is_reg => ALU_R_I[group],
        0x81 | 0x83 if i.reg == arith::CMP => CMP_M_I,
        0x81 | 0x83 => ALU_M_I[group],
        // OP EAX, imm32 (low bits 101) and TEST EAX, imm32 (A9).
        0x05 | 0x0D | 0x15 | 0x1D | 0x25 | 0x2D | 0x35 | 0x3D => ALU_A_I[alu],
        0xA9 => ALU_A_I_TEST,
        0x99 => CDQ,
        0xF7 if is_reg => match i.reg {
            2 => NOT_R,
            3 => NEG_R,
            4 => MUL_R,
            6 => DIV_R,
            7 => IDIV_R,
            _ => NONE,
        },
        0x0F40..=0x0F4F if is_reg => CMOV_R,
        _ => NONE,
    }
}

/// Fuse `first` (a compare) with `second` (the Jcc right after it in the same block) into one
/// instruction, if both are fast forms that fuse and have the same operand size.
pub fn fuse(first: &Instr, second: &Instr) -> Option<Instr> {
    // A Jcc carrying a folded move does not follow the compare directly.
    if second.fast != JCC || first.op32 != second.op32 || second.pre_mov != 0 {
        return None;
    }
    let &(_, fused) = FUSABLE.iter().find(|(k, _)| *k == first.fast)?;
    Some(Instr {
        fast: fused,
        cc: second.reg,
        imm2: second.imm,
        first_len: first.len,
        len: first.len + second.len,
        end: second.end,
        ..*first
    })
}

/// Whether `i` is a fused compare and branch (two instructions).
#[inline(always)]
pub fn is_fused(i: &Instr) -> bool {
    (FIRST_FUSED as u8..=FUSED_TEST8_M_I as u8).contains(&(i.fast as u8))
}

/// Each register form that sets every flag it sets without reading any, and its form that
/// only computes the result ([`drop_dead_flags`]).
const WITHOUT_FLAGS: [(Kind, Kind); 14] = [
    (ALU_R_I_ADD, ALU_R_I_ADD_NF),
    (ALU_R_I_OR, ALU_R_I_OR_NF),
    (ALU_R_I_AND, ALU_R_I_AND_NF),
    (ALU_R_I_SUB, ALU_R_I_SUB_NF),
    (ALU_RR_ADD, ALU_RR_ADD_NF),
    (ALU_RR_AND, ALU_RR_AND_NF),
    (ALU_RR_SUB, ALU_RR_SUB_NF),
    (ALU_RR_XOR, ALU_RR_XOR_NF),
    (INC_R, INC_R_NF),
    (DEC_R, DEC_R_NF),
    (IMUL_R_RM_REG, IMUL_R_RM_REG_NF),
    (SHIFT_I_R_SHL, SHIFT_I_R_SHL_NF),
    (SHIFT_I_R_SHR, SHIFT_I_R_SHR_NF),
    (SHIFT_I_R_SAR, SHIFT_I_R_SAR_NF),
];

/// The six arithmetic flags, as bits of the masks [`flag_use`] returns.
const FLAG_CF: u8 = 1;
const FLAG_OF: u8 = 0x20;
const ALL_FLAGS: u8 = 0x3F;

/// Which arithmetic flags `i` may read, and which it always writes, for [`drop_dead_flags`]:
/// `(reads, writes)`. An instruction that may fault, touches memory or may leave the block
/// counts as reading every flag: an exception pushes EFLAGS, and the code after the block may
/// read any. So do the forms not listed.
fn flag_use(i: &Instr) -> (u8, u8) {
    let count = i.imm & 0x1F;
    match i.fast {
        // A shift by an immediate count sets every flag, unless the count is 0; a rotate sets
        // CF and OF. By CL, either may leave the flags as they were.
        SHIFT_I_R_SHL | SHIFT_I_R_SHR | SHIFT_I_R_SAR if count != 0 => (0, ALL_FLAGS),
        SHIFT_I_R_ROL | SHIFT_I_R_ROR if count != 0 => (0, FLAG_CF | FLAG_OF),
        SHIFT_I_R_SHL | SHIFT_I_R_SHR | SHIFT_I_R_SAR | SHIFT_I_R_ROL | SHIFT_I_R_ROR
        | SHIFT_CL_R_SHL | SHIFT_CL_R_SHR => (0, 0),
        // Registers only, no flags.
        MOV_RM_R_REG | MOV_R_IMM | MOVZX_B_REG | MOVZX_W_REG | LEA | CDQ | NOT_R
        | MOV_RM_R8_REG => (0, 0),
        // Registers only, every flag set from the operands.
        ALU_RR_ADD | ALU_RR_AND | ALU_RR_SUB | ALU_RR_XOR | ALU_RR_CMP | ALU_RR_TEST
        | ALU_R_I_ADD | ALU_R_I_OR | ALU_R_I_AND | ALU_R_I_SUB | ALU_R_I_CMP | ALU_A_I_ADD
        | ALU_A_I_AND | ALU_A_I_CMP | ALU_A_I_TEST | TEST_R_I | CMP_RM8_I_REG | TEST_RR8
        | ALU8_R_I_AND | TEST8_A_I | TEST8_R_I | NEG_R | IMUL_R_RM_REG | MUL_R => (0, ALL_FLAGS),
        // A register compare and the Jcc after it: the compare sets every flag before the
        // jump reads any (a jump beyond the CS limit faults after the compare retired).
        FUSED_ALU_RR_CMP | FUSED_ALU_RR_TEST | FUSED_ALU_R_I_CMP | FUSED_ALU_A_I_CMP
        | FUSED_TEST_RR8 | FUSED_CMP_RM8_I_REG | FUSED_ALU_R_I_AND | FUSED_TEST_R_I
        | FUSED_TEST8_R_I => (0, ALL_FLAGS),
        ALU_RR_SBB => (FLAG_CF, ALL_FLAGS),
        // INC and DEC keep CF; a Jcc after DEC may read it.
        INC_R | DEC_R => (0, ALL_FLAGS & !FLAG_CF),
        FUSED_DEC_R => (FLAG_CF, ALL_FLAGS & !FLAG_CF),
        _ => (ALL_FLAGS, 0),
    }
}

/// Flag liveness over one decoded block: each register instruction whose flags are all set
/// again before anything could read them (a later instruction of the block, a fault's pushed
/// EFLAGS, the code after the block) becomes its form that computes only the result. Trial
/// division's `add ecx, 1` before `imul eax, ecx`, and the IMUL before the compare, are such.
/// Only a whole block may run these forms: a run that stops inside it (a budget's end, a
/// single step) runs the block with [`restore_flags`], as the flags must be exact wherever it
/// stops.
pub fn drop_dead_flags(block: &mut [Instr]) {
    let mut live = ALL_FLAGS;
    for i in block.iter_mut().rev() {
        let (reads, writes) = flag_use(i);
        if writes != 0 && live & writes == 0 {
            if let Some(&(_, nf)) = WITHOUT_FLAGS.iter().find(|(k, _)| *k == i.fast) {
                i.fast = nf;
            }
        }
        live = (live & !writes) | reads;
    }
}

/// Every instruction of `block` as the form that sets its flags: for a run that stops inside
/// the block (the caller does [`drop_dead_flags`] again afterwards).
#[cold]
#[inline(never)]
pub fn restore_flags(block: &mut [Instr]) {
    for i in block {
        *i = with_flags(i);
    }
}

/// `i` as the form that sets its flags, if it is one that does not ([`drop_dead_flags`]).
#[inline]
pub fn with_flags(i: &Instr) -> Instr {
    match WITHOUT_FLAGS.iter().find(|(_, nf)| *nf == i.fast) {
        Some(&(k, _)) => Instr { fast: k, ..*i },
        None => *i,
    }
}

/// The result of a 32-bit ALU operation, without its flags.
#[inline(always)]
fn alu_result<const OP: u8>(a: u32, b: u32) -> u32 {
    match OP {
        arith::ADD => a.wrapping_add(b),
        arith::OR => a | b,
        arith::AND => a & b,
        arith::SUB => a.wrapping_sub(b),
        _ => a ^ b,
    }
}

/// OP r32, imm without flags.
#[inline(always)]
fn alu_r_i_nf<const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let r = alu_result::<OP>(W32::reg(cpu, i.rm), i.imm);
    W32::set_reg(cpu, i.rm, r);
    Ok(())
}

/// OP r/m32 (a register), r32 without flags.
#[inline(always)]
fn alu_rr_nf<const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let r = alu_result::<OP>(W32::reg(cpu, i.rm), W32::reg(cpu, i.reg));
    W32::set_reg(cpu, i.rm, r);
    Ok(())
}

/// INC or DEC r32 without flags.
#[inline(always)]
fn incdec_r_nf<const DEC: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let step = if DEC { u32::MAX } else { 1 };
    W32::set_reg(cpu, i.reg, W32::reg(cpu, i.reg).wrapping_add(step));
    Ok(())
}

/// SHL, SHR or SAR r32 by an immediate count (not 0) without flags.
#[inline(always)]
fn shift_i_r_nf<const OP: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let (a, count) = (W32::reg(cpu, i.rm), i.imm & 0x1F);
    let r = match OP {
        shift::SHL => a << count,
        shift::SHR => a >> count,
        _ => ((a as i32) >> count) as u32,
    };
    W32::set_reg(cpu, i.rm, r);
    Ok(())
}

/// IMUL r32, r32 without flags.
#[inline(always)]
fn imul_rr_nf(cpu: &mut Cpu, i: &Instr) -> Fault {
    let r = W32::reg(cpu, i.reg).wrapping_mul(W32::reg(cpu, i.rm));
    W32::set_reg(cpu, i.reg, r);
    Ok(())
}

/// Fold `first`, if it is a two-byte register-to-register `MOV r32, r32` (89 or 8B, no prefix),
/// into `second`, the fast form right after it in the same block: the run loop then retires both
/// with one dispatch (the move before the instruction, see [`Instr::pre_mov`]). Such moves are
/// a quarter of the dispatches of the trial-division benchmark, and each dispatch costs V8 far
/// more than the move itself.
pub fn fold_move(first: &Instr, second: &Instr) -> Option<Instr> {
    let reg_form = first.scale & REG_FORM != 0;
    let is_move = matches!(first.opcode, 0x89 | 0x8B) && first.op32 && reg_form && first.len == 2;
    if !is_move || first.pre_mov != 0 || second.pre_mov != 0 || second.fast == NONE {
        return None;
    }
    let (dst, src) = if first.opcode == 0x89 {
        (first.rm, first.reg)
    } else {
        (first.reg, first.rm)
    };
    Some(Instr {
        pre_mov: PRE_MOV | (dst & 7) << 3 | (src & 7),
        ..*second
    })
}

/// Length in bytes of what is folded into `i` before its own bytes (0 if nothing): a move
/// ([`fold_move`]) and a CDQ ([`fold_cdq`]). `i` starts that much before `end - len`.
#[inline(always)]
pub fn folded_len(i: &Instr) -> u16 {
    let mov = if i.pre_mov != 0 { 2 } else { 0 };
    mov + u16::from(has_folded_cdq(i))
}

/// Fold `first`, a CDQ (with or without a move folded into it), into `second`, the `IDIV r32`
/// right after it: C's signed division and remainder, which compilers always emit as this
/// pair. The run loop retires the CDQ (it cannot fault) and then the IDIV with one dispatch;
/// a #DE leaves the CDQ retired and EIP at the IDIV, as the two instructions would.
pub fn fold_cdq(first: &Instr, second: &Instr) -> Option<Instr> {
    // One byte (no prefix): what the run loop's EIP arithmetic counts for it (folded_len).
    if first.fast != CDQ || first.len != 1 || second.fast != IDIV_R || second.pre_mov != 0 {
        return None;
    }
    Some(Instr {
        fast: CDQ_IDIV_R,
        pre_mov: first.pre_mov,
        ..*second
    })
}

/// Whether `i` is an IDIV with a CDQ folded in ([`fold_cdq`]).
#[inline(always)]
pub fn has_folded_cdq(i: &Instr) -> bool {
    i.fast == CDQ_IDIV_R
}

/// The CDQ folded into `i` ([`has_folded_cdq`]), as the instruction of its own it was
/// decoded as.
fn folded_cdq(i: &Instr) -> Instr {
    Instr {
        exec: arith::cdq,
        opcode: 0x99,
        op32: true,
        addr32: i.addr32,
        len: 1,
        end: i.end - u16::from(i.len),
        fast: CDQ,
        ..Instr::default()
    }
}

/// The move folded into `i`, as the instruction of its own it was decoded as (the `89 /r`
/// register form): what single-stepping runs alone, and what the compiling tier compiles.
pub fn folded_move(i: &Instr) -> Instr {
    Instr {
        exec: data::mov_rm_r::<RegRm, W32>,
        opcode: 0x89,
        op32: true,
        addr32: i.addr32,
        rm: (i.pre_mov >> 3) & 7,
        reg: i.pre_mov & 7,
        scale: REG_FORM,
        len: 2,
        end: i.end - u16::from(i.len) - u16::from(has_folded_cdq(i)),
        fast: MOV_RM_R_REG,
        ..Instr::default()
    }
}

/// The most guest instructions one decoded instruction retires: a folded move, and a fused
/// compare and branch or a folded CDQ and IDIV.
pub const MAX_RETIRES: usize = 3;

/// How many guest instructions `i` retires when it runs whole.
#[inline(always)]
pub fn retires(i: &Instr) -> u32 {
    1 + u32::from(i.pre_mov != 0) + u32::from(is_fused(i) || has_folded_cdq(i))
}

/// How many of `instrs`, from the first, retire at most `budget` guest instructions in all.
pub fn fitting(instrs: &[Instr], budget: u64) -> usize {
    let mut left = budget;
    instrs
        .iter()
        .take_while(|i| {
            let fits = u64::from(retires(i)) <= left;
            left = left.saturating_sub(u64::from(retires(i)));
            fits
        })
        .count()
}

/// `instrs` with every folded move and CDQ taken out again as an instruction of its own, and
/// every form that skips its flags as the one that sets them.
pub fn unfold(instrs: &[Instr]) -> Vec<Instr> {
    let mut out = Vec::with_capacity(instrs.len() + instrs.len() / 2);
    for i in instrs {
        if i.pre_mov != 0 {
            out.push(folded_move(i));
        }
        if has_folded_cdq(i) {
            out.push(folded_cdq(i));
            out.push(Instr {
                pre_mov: 0,
                fast: IDIV_R,
                ..*i
            });
        } else {
            out.push(Instr {
                pre_mov: 0,
                ..with_flags(i)
            });
        }
    }
    out
}

/// What runs alone when `i` cannot run whole (single-stepping, or the budget ends inside it):
/// the move folded into it, its CDQ, or the compare of a fused pair; `None` if it is one
/// instruction. Out of line: the run loop needs it only at a budget's end or a single step.
#[inline(never)]
pub fn first_part(i: &Instr) -> Option<Instr> {
    if i.pre_mov != 0 {
        Some(folded_move(i))
    } else if has_folded_cdq(i) {
        Some(folded_cdq(i))
    } else if is_fused(i) {
        Some(first_of_fused(i))
    } else {
        None
    }
}

/// The fused kinds are numbered after every plain kind, so one comparison tells them apart.
const FIRST_FUSED: Kind = FUSED_ALU_RR_CMP;
const _: () = {
    let mut n = 0;
    while n < FUSABLE.len() {
        assert!(
            (FUSABLE[n].0 as u8) < FIRST_FUSED as u8 && FUSABLE[n].1 as u8 >= FIRST_FUSED as u8
        );
        n += 1;
    }
    assert!(
        CDQ_IDIV_R as u8 + 1 == FIRST_FUSED as u8,
        "the last plain kind"
    );
};

/// The compare of a fused pair, alone: for single-stepping, which must stop between the two.
pub fn first_of_fused(i: &Instr) -> Instr {
    let kind = FUSABLE
        .iter()
        .find(|(_, f)| *f == i.fast)
        .map_or(NONE, |(k, _)| *k);
    Instr {
        fast: kind,
        len: i.first_len,
        end: i.end - (i.len - i.first_len) as u16,
        ..*i
    }
}

/// A fused compare and Jcc: the compare (which may fault: then neither retired), then
/// [`branch_after_compare`]. A macro, so that the compare is a direct call of a handler that is
/// `#[inline(always)]`: passed as an `impl FnOnce` it went through a `call_once` shim that
/// LLVM inlined natively but left out of line in the wasm build, for the memory forms (6% of
/// gzip's time in V8, seen with `perf`).
macro_rules! fused {
    ($cpu:ident, $i:ident, $compare:expr) => {
        match $compare($cpu, $i) {
            Ok(()) => branch_after_compare($cpu, $i),
            Err(e) => Err(e),
        }
    };
}

/// The one `match` over the fast kinds, shared by [`exec`] and [`run`]. Each arm names its
/// class, which the caller turns into what happens around the handler:
/// - `pure`: reads and writes registers and flags only (no memory, no device, no EIP), and
///   faults (#DE) before changing any register;
/// - `pure_pair`: a `pure` pair folded into one, whose first part cannot fault and is counted
///   retired before the pair runs;
/// - `straight`: reads and writes registers and flags and may read memory, but never writes
///   memory, changes EIP or ends the block, and faults before changing any register (so nothing
///   needs rolling back);
/// - `writes`: may also write memory, which can end the block (a write to decoded code or to a
///   device: `stop_block`), but never changes EIP;
/// - `branch`: may change EIP (and push, so end the block);
/// - `other`: anything, through the handler pointer.
macro_rules! dispatch {
    (
        $cpu:ident, $i:ident, $pure:ident, $pure_pair:ident, $straight:ident, $writes:ident,
        $branch:ident, $fused_reg:ident, $jcc:ident, $other:ident
    ) => {
        match $i.fast {
            MOV_RM_R_REG => $pure!(data::mov_rm_r::<RegRm, W32>($cpu, $i)),
            MOV_RM_R_MEM => $writes!(data::mov_rm_r::<Mem32Rm, W32>($cpu, $i)),
            MOV_R_RM_MEM => $straight!(data::mov_r_rm::<Mem32Rm, W32>($cpu, $i)),
            MOV_R_IMM => $pure!(data::mov_r_imm::<W32>($cpu, $i)),
            MOV_RM_IMM_MEM => $writes!(data::mov_rm_imm::<Mem32Rm, W32>($cpu, $i)),
            MOV_RM_R8_MEM => $writes!(data::mov_rm_r::<Mem32Rm, W8>($cpu, $i)),
            MOV_R_RM8_MEM => $straight!(data::mov_r_rm::<Mem32Rm, W8>($cpu, $i)),
            MOVZX_B_REG => $pure!(data::movzx_b::<RegRm, W32>($cpu, $i)),
            MOVZX_B_MEM => $straight!(data::movzx_b::<Mem32Rm, W32>($cpu, $i)),
            MOVZX_W_REG => $pure!(data::movzx_w::<RegRm, W32>($cpu, $i)),
            MOVZX_W_MEM => $straight!(data::movzx_w::<Mem32Rm, W32>($cpu, $i)),
            LEA => $pure!(data::lea::<Mem32Rm, W32>($cpu, $i)),
            INC_R => $pure!(arith::incdec_r::<W32, false>($cpu, $i)),
            DEC_R => $pure!(arith::incdec_r::<W32, true>($cpu, $i)),
            INC_M => $writes!(arith::incdec_rm::<Mem32Rm, W32, false>($cpu, $i)),
            DEC_M => $writes!(arith::incdec_rm::<Mem32Rm, W32, true>($cpu, $i)),
            PUSH_R => $writes!(data::push_reg::<W32>($cpu, $i)),
            POP_R => $straight!(data::pop_reg::<W32>($cpu, $i)),
            JCC => $jcc!(),
            JMP_REL => $branch!(control::jmp_rel::<W32>($cpu, $i)),
            CALL_REL => $branch!(control::call_rel::<W32>($cpu, $i)),
            RET => $branch!(control::ret_near::<W32>($cpu, $i)),
            IMUL_R_RM_REG => $pure!(muldiv::imul_r_rm::<RegRm, W32>($cpu, $i)),
            CMP_M_R => $straight!(arith::alu_rm_r::<Mem32Rm, W32, { arith::CMP }>($cpu, $i)),
            CMP_M_I => $straight!(arith::alu_rm_i::<Mem32Rm, W32, { arith::CMP }>($cpu, $i)),
            TEST_R_I => $pure!(arith::alu_rm_i::<RegRm, W32, { arith::TEST }>($cpu, $i)),
            CMP_RM8_I_REG => $pure!(arith::alu_rm_i::<RegRm, W8, { arith::CMP }>($cpu, $i)),
            CMP_RM8_I_MEM => $straight!(arith::alu_rm_i::<Mem32Rm, W8, { arith::CMP }>($cpu, $i)),
            TEST_RR8 => $pure!(arith::alu_rm_r::<RegRm, W8, { arith::TEST }>($cpu, $i)),
            SHIFT_I_R_ROL => $pure!(shift::shift_imm::<RegRm, W32, { shift::ROL }>($cpu, $i)),
            SHIFT_I_R_ROR => $pure!(shift::shift_imm::<RegRm, W32, { shift::ROR }>($cpu, $i)),
            SHIFT_I_R_SHL => $pure!(shift::shift_imm::<RegRm, W32, { shift::SHL }>($cpu, $i)),
            SHIFT_I_R_SHR => $pure!(shift::shift_imm::<RegRm, W32, { shift::SHR }>($cpu, $i)),
            SHIFT_I_R_SAR => $pure!(shift::shift_imm::<RegRm, W32, { shift::SAR }>($cpu, $i)),
            SHIFT_CL_R_SHL => $pure!(shift::shift_cl::<RegRm, W32, { shift::SHL }>($cpu, $i)),
            SHIFT_CL_R_SHR => $pure!(shift::shift_cl::<RegRm, W32, { shift::SHR }>($cpu, $i)),
            ALU_RR_ADD => $pure!(arith::alu_rm_r::<RegRm, W32, { arith::ADD }>($cpu, $i)),
            ALU_RR_SBB => $pure!(arith::alu_rm_r::<RegRm, W32, { arith::SBB }>($cpu, $i)),
            ALU_RR_AND => $pure!(arith::alu_rm_r::<RegRm, W32, { arith::AND }>($cpu, $i)),
            ALU_RR_SUB => $pure!(arith::alu_rm_r::<RegRm, W32, { arith::SUB }>($cpu, $i)),
            ALU_RR_XOR => $pure!(arith::alu_rm_r::<RegRm, W32, { arith::XOR }>($cpu, $i)),
            ALU_RR_CMP => $pure!(arith::alu_rm_r::<RegRm, W32, { arith::CMP }>($cpu, $i)),
            ALU_RR_TEST => $pure!(arith::alu_rm_r::<RegRm, W32, { arith::TEST }>($cpu, $i)),
            ALU_R_M_ADD => $straight!(arith::alu_r_rm::<Mem32Rm, W32, { arith::ADD }>($cpu, $i)),
            ALU_R_M_OR => $straight!(arith::alu_r_rm::<Mem32Rm, W32, { arith::OR }>($cpu, $i)),
            ALU_R_M_SUB => $straight!(arith::alu_r_rm::<Mem32Rm, W32, { arith::SUB }>($cpu, $i)),
            ALU_R_M_XOR => $straight!(arith::alu_r_rm::<Mem32Rm, W32, { arith::XOR }>($cpu, $i)),
            ALU_R_M_CMP => $straight!(arith::alu_r_rm::<Mem32Rm, W32, { arith::CMP }>($cpu, $i)),
            ALU_M_R_ADD => $writes!(arith::alu_rm_r::<Mem32Rm, W32, { arith::ADD }>($cpu, $i)),
            ALU_M_R_SUB => $writes!(arith::alu_rm_r::<Mem32Rm, W32, { arith::SUB }>($cpu, $i)),
            ALU_R_I_ADD => $pure!(arith::alu_rm_i::<RegRm, W32, { arith::ADD }>($cpu, $i)),
            ALU_R_I_OR => $pure!(arith::alu_rm_i::<RegRm, W32, { arith::OR }>($cpu, $i)),
            ALU_R_I_AND => $pure!(arith::alu_rm_i::<RegRm, W32, { arith::AND }>($cpu, $i)),
            ALU_R_I_SUB => $pure!(arith::alu_rm_i::<RegRm, W32, { arith::SUB }>($cpu, $i)),
            ALU_R_I_CMP => $pure!(arith::alu_rm_i::<RegRm, W32, { arith::CMP }>($cpu, $i)),
            ALU_M_I_ADD => $writes!(arith::alu_rm_i::<Mem32Rm, W32, { arith::ADD }>($cpu, $i)),
            ALU_A_I_ADD => $pure!(arith::alu_a_i::<W32, { arith::ADD }>($cpu, $i)),
            ALU_A_I_AND => $pure!(arith::alu_a_i::<W32, { arith::AND }>($cpu, $i)),
            ALU_A_I_CMP => $pure!(arith::alu_a_i::<W32, { arith::CMP }>($cpu, $i)),
            ALU_A_I_TEST => $pure!(arith::alu_a_i::<W32, { arith::TEST }>($cpu, $i)),
            CDQ => $pure!(arith::cdq($cpu, $i)),
            NOT_R => $pure!(arith::not::<RegRm, W32>($cpu, $i)),
            NEG_R => $pure!(arith::neg::<RegRm, W32>($cpu, $i)),
            MUL_R => $pure!(muldiv::mul::<RegRm, W32>($cpu, $i)),
            DIV_R => $pure!(muldiv::div::<RegRm, W32>($cpu, $i)),
            IDIV_R => $pure!(muldiv::idiv::<RegRm, W32>($cpu, $i)),
            CDQ_IDIV_R => $pure_pair!(cdq_then_idiv($cpu, $i)),
            SETCC_R => $pure!(arith::setcc::<RegRm, W8>($cpu, $i)),
            CMOV_R => $pure!(arith::cmov::<RegRm, W32>($cpu, $i)),
            ALU8_M_R_CMP => $straight!(arith::alu_rm_r::<Mem32Rm, W8, { arith::CMP }>($cpu, $i)),
            ALU8_R_I_AND => $pure!(arith::alu_rm_i::<RegRm, W8, { arith::AND }>($cpu, $i)),
            TEST8_A_I => $pure!(arith::alu_a_i::<W8, { arith::TEST }>($cpu, $i)),
            MOV_RM_R8_REG => $pure!(data::mov_rm_r::<RegRm, W8>($cpu, $i)),
            MOV_RM_IMM8_MEM => $writes!(data::mov_rm_imm::<Mem32Rm, W8>($cpu, $i)),
            TEST8_R_I => $pure!(arith::alu_rm_i::<RegRm, W8, { arith::TEST }>($cpu, $i)),
            TEST8_M_I => $straight!(arith::alu_rm_i::<Mem32Rm, W8, { arith::TEST }>($cpu, $i)),
            MOV_RM_R16_MEM => $writes!(data::mov_rm_r::<Mem32Rm, W16>($cpu, $i)),
            MOV_R_RM16_MEM => $straight!(data::mov_r_rm::<Mem32Rm, W16>($cpu, $i)),
            MOVSX_W_MEM => $straight!(data::movsx_w::<Mem32Rm, W32>($cpu, $i)),
            FUSED_ALU_RR_CMP => $fused_reg!(arith::alu_rm_r::<RegRm, W32, { arith::CMP }>),
            FUSED_ALU_RR_TEST => $fused_reg!(arith::alu_rm_r::<RegRm, W32, { arith::TEST }>),
            FUSED_ALU_R_I_CMP => $fused_reg!(arith::alu_rm_i::<RegRm, W32, { arith::CMP }>),
            FUSED_ALU_A_I_CMP => $fused_reg!(arith::alu_a_i::<W32, { arith::CMP }>),
            FUSED_ALU_R_M_CMP => $branch!(fused!(
                $cpu,
                $i,
                arith::alu_r_rm::<Mem32Rm, W32, { arith::CMP }>
            )),
            FUSED_CMP_M_R => $branch!(fused!(
                $cpu,
                $i,
                arith::alu_rm_r::<Mem32Rm, W32, { arith::CMP }>
            )),
            FUSED_CMP_M_I => $branch!(fused!(
                $cpu,
                $i,
                arith::alu_rm_i::<Mem32Rm, W32, { arith::CMP }>
            )),
            FUSED_TEST_RR8 => $fused_reg!(arith::alu_rm_r::<RegRm, W8, { arith::TEST }>),
            FUSED_CMP_RM8_I_REG => $fused_reg!(arith::alu_rm_i::<RegRm, W8, { arith::CMP }>),
            FUSED_CMP_RM8_I_MEM => $branch!(fused!(
                $cpu,
                $i,
                arith::alu_rm_i::<Mem32Rm, W8, { arith::CMP }>
            )),
            FUSED_DEC_R => $fused_reg!(arith::incdec_r::<W32, true>),
            FUSED_ALU_R_I_AND => $fused_reg!(arith::alu_rm_i::<RegRm, W32, { arith::AND }>),
            FUSED_TEST_R_I => $fused_reg!(arith::alu_rm_i::<RegRm, W32, { arith::TEST }>),
            FUSED_ALU8_M_R_CMP => $branch!(fused!(
                $cpu,
                $i,
                arith::alu_rm_r::<Mem32Rm, W8, { arith::CMP }>
            )),
            FUSED_TEST8_R_I => $fused_reg!(arith::alu_rm_i::<RegRm, W8, { arith::TEST }>),
            FUSED_TEST8_M_I => $branch!(fused!(
                $cpu,
                $i,
                arith::alu_rm_i::<Mem32Rm, W8, { arith::TEST }>
            )),
            ALU_R_I_ADD_NF => $pure!(alu_r_i_nf::<{ arith::ADD }>($cpu, $i)),
            ALU_R_I_OR_NF => $pure!(alu_r_i_nf::<{ arith::OR }>($cpu, $i)),
            ALU_R_I_AND_NF => $pure!(alu_r_i_nf::<{ arith::AND }>($cpu, $i)),
            ALU_R_I_SUB_NF => $pure!(alu_r_i_nf::<{ arith::SUB }>($cpu, $i)),
            ALU_RR_ADD_NF => $pure!(alu_rr_nf::<{ arith::ADD }>($cpu, $i)),
            ALU_RR_AND_NF => $pure!(alu_rr_nf::<{ arith::AND }>($cpu, $i)),
            ALU_RR_SUB_NF => $pure!(alu_rr_nf::<{ arith::SUB }>($cpu, $i)),
            ALU_RR_XOR_NF => $pure!(alu_rr_nf::<{ arith::XOR }>($cpu, $i)),
            INC_R_NF => $pure!(incdec_r_nf::<false>($cpu, $i)),
            DEC_R_NF => $pure!(incdec_r_nf::<true>($cpu, $i)),
            IMUL_R_RM_REG_NF => $pure!(imul_rr_nf($cpu, $i)),
            SHIFT_I_R_SHL_NF => $pure!(shift_i_r_nf::<{ shift::SHL }>($cpu, $i)),
            SHIFT_I_R_SHR_NF => $pure!(shift_i_r_nf::<{ shift::SHR }>($cpu, $i)),
            SHIFT_I_R_SAR_NF => $pure!(shift_i_r_nf::<{ shift::SAR }>($cpu, $i)),
            NONE => $other!(($i.exec)($cpu, $i)),
        }
    };
}

/// Execute one decoded instruction: inline if it is a fast form, else through its handler, with
/// EIP already past it (the single-instruction form of [`run`], for tests).
#[cfg(test)]
#[inline(always)]
pub(crate) fn exec(cpu: &mut Cpu, i: &Instr) -> Fault {
    macro_rules! plain {
        ($e:expr) => {
            $e
        };
    }
    macro_rules! first_counted {
        ($e:expr) => {{
            cpu.instructions += 1;
            $e
        }};
    }
    macro_rules! fused_plain {
        ($compare:expr) => {
            fused!(cpu, i, $compare)
        };
    }
    macro_rules! jcc_plain {
        () => {
            control::jcc::<W32>(cpu, i)
        };
    }
    dispatch!(
        cpu,
        i,
        plain,
        first_counted,
        plain,
        plain,
        plain,
        fused_plain,
        jcc_plain,
        plain
    )
}

/// Run `instrs` (all or part of one block) from CS:EIP in order, until one of them branches away
/// or ends the block, or they are all done. On a fault, EIP (and ESP, for instructions that may
/// have changed it first) is rolled back to the faulting instruction, which did not retire, and
/// the exception is returned for delivery.
#[inline(always)]
pub(crate) fn run(cpu: &mut Cpu, instrs: &[Instr]) -> Fault {
    run_repeating(cpu, instrs, 0)
}

/// [`run`], and if `instrs` is a whole block of fast forms only (no instruction through the
/// handler pointer): when the block branches back to its own start (a loop that is one block)
/// while fewer than `repeat_below` instructions have retired, run it again here. The caller
/// sets `repeat_below` (0: never) so that this is exactly when the run loop would run the block
/// again at once and whole: it would find the same block by a TLB probe and a cache probe,
/// after asking [`Cpu::must_stop_chaining`], which the caller asks once, before the first pass.
/// Nothing a fast form does could change any of those answers (a code segment load, a CR3 or
/// CR0 write, INVLPG, a change of CPL, IF, TF or the debug registers, HLT, a device access that
/// may raise an interrupt, a data breakpoint) except through `stop_block` (a write to decoded
/// code or to a device, a data breakpoint), and a pass that set it is not repeated.
///
/// EIP is not kept from one instruction to the next: each instruction knows where it ends in
/// its block, so it is the block's start plus that. Only instructions that may read or change
/// EIP (branches, and anything through the handler pointer) see `cpu.eip` updated before they
/// run, and the straight-line forms between them pay nothing for it. The retired count is
/// kept the same way: register-only instructions count in a local, which every instruction that
/// could observe the count (one that touches memory or a device, branches, faults, or goes
/// through the handler pointer) adds to `cpu.instructions` first, so a device or RDTSC still
/// sees exact time.
///
/// What the loop keeps from one instruction to the next is kept small on purpose: V8 gives
/// each such value a register or a stack slot it moves at every loop turn.
#[inline(always)]
pub(crate) fn run_repeating(cpu: &mut Cpu, instrs: &[Instr], repeat_below: u64) -> Fault {
    let (Some(first), Some(last)) = (instrs.first(), instrs.last()) else {
        return Ok(());
    };
    let block_start = cpu.eip.wrapping_sub(u32::from(
        first.end - u16::from(first.len) - folded_len(first),
    ));
    cpu.repeat_below = repeat_below;
    // Register-only instructions retired since `cpu.instructions` was last brought up to date.
    // Only an instruction that touches memory, a device or the run loop can observe the count
    // (through a device's clock, RDTSC, a fault, the repeat check); each brings it up to date
    // first, so they all see exact time, while a run of register-only instructions counts in
    // a register instead of a load, add and store each (a chain through memory the CPU cannot
    // overlap).
    let mut pending: u64 = 0;
    'pass: loop {
        for i in instrs {
            let next = block_start.wrapping_add(u32::from(i.end));
            // A move folded in retires first (it cannot fault), so that a fault of the
            // instruction leaves it retired and EIP at the instruction.
            if i.pre_mov != 0 {
                let p = i.pre_mov;
                cpu.regs[usize::from((p >> 3) & 7)] = cpu.regs[usize::from(p & 7)];
                pending += 1;
            }
            // Bring the count up to date: what runs next may read it.
            macro_rules! counted {
                () => {
                    cpu.instructions += std::mem::take(&mut pending)
                };
            }
            // A register-only instruction: retires in `pending`, or faults (#DE), leaving
            // every instruction before it counted and EIP back at it.
            macro_rules! pure {
                ($e:expr) => {{
                    if let Err(e) = $e {
                        counted!();
                        cpu.eip = next.wrapping_sub(u32::from(i.len));
                        return Err(e);
                    }
                    pending += 1;
                    continue;
                }};
            }
            // Two register-only instructions folded into one, the first of which cannot fault.
            macro_rules! pure_pair {
                ($e:expr) => {{
                    pending += 1;
                    pure!($e)
                }};
            }
            // The instruction ran to completion (it retires) or faulted (it did not: EIP back
            // to it).
            macro_rules! retire {
                ($e:expr) => {{
                    counted!();
                    if let Err(e) = $e {
                        cpu.eip = next.wrapping_sub(u32::from(i.len));
                        return Err(e);
                    }
                    cpu.instructions += 1;
                }};
            }
            macro_rules! straight {
                ($e:expr) => {{
                    retire!($e);
                    continue;
                }};
            }
            macro_rules! writes {
                ($e:expr) => {{
                    retire!($e);
                    if cpu.stop_block {
                        cpu.eip = next;
                        return Ok(());
                    }
                    continue;
                }};
            }
            macro_rules! branch {
                ($e:expr) => {{
                    counted!();
                    let esp = cpu.regs[ESP];
                    cpu.eip = next;
                    if let Err(e) = $e {
                        cpu.eip = next.wrapping_sub(u32::from(i.len));
                        cpu.regs[ESP] = esp;
                        return Err(e);
                    }
                    cpu.instructions += 1;
                    if cpu.eip != next || cpu.stop_block {
                        let again = cpu.eip == block_start
                            && cpu.instructions < cpu.repeat_below
                            && !cpu.stop_block;
                        if again {
                            continue 'pass;
                        }
                        return Ok(());
                    }
                    continue;
                }};
            }
            // Where a register-only branch goes once it retired: on in the block if not taken,
            // back to the block's start if that is a repeat (see above), else out.
            macro_rules! branched {
                ($taken:expr, $target:expr) => {{
                    if $taken {
                        if $target == block_start
                            && cpu.instructions + pending < cpu.repeat_below
                            && !cpu.stop_block
                        {
                            continue 'pass;
                        }
                        counted!();
                        cpu.eip = $target;
                        return Ok(());
                    }
                    if cpu.stop_block {
                        counted!();
                        cpu.eip = next;
                        return Ok(());
                    }
                    continue;
                }};
            }
            // A compare that reads registers only, fused with the conditional jump after it:
            // neither touches memory or ESP, so both retire in `pending` like register-only
            // instructions. A taken jump beyond the CS limit leaves the compare retired and EIP
            // at the jump, which then runs alone and raises its #GP (as `branch_after_compare`).
            macro_rules! fused_reg {
                ($compare:expr) => {{
                    if let Err(e) = $compare(cpu, i) {
                        counted!();
                        cpu.eip = next.wrapping_sub(u32::from(i.len));
                        return Err(e);
                    }
                    pending += 1;
                    let taken = cpu.flags.cond(i.cc);
                    let target = next.wrapping_add(i.imm2);
                    if taken && target > cpu.segs[Segment::CS as usize].limit {
                        counted!();
                        cpu.eip = next.wrapping_sub(u32::from(i.len - i.first_len));
                        return Ok(());
                    }
                    pending += 1;
                    branched!(taken, target)
                }};
            }
            // A conditional jump alone (it reads the flags only).
            macro_rules! jcc {
                () => {{
                    let taken = cpu.flags.cond(i.reg);
                    let target = next.wrapping_add(i.imm);
                    if taken && target > cpu.segs[Segment::CS as usize].limit {
                        counted!();
                        cpu.eip = next.wrapping_sub(u32::from(i.len));
                        return Err(Exception::gp(0));
                    }
                    pending += 1;
                    branched!(taken, target)
                }};
            }
            dispatch!(cpu, i, pure, pure_pair, straight, writes, branch, fused_reg, jcc, branch)
        }
        cpu.instructions += pending;
        cpu.eip = block_start.wrapping_add(u32::from(last.end));
        return Ok(());
    }
}

/// A folded CDQ and IDIV ([`fold_cdq`]): the CDQ, then the IDIV as the instruction. The run
/// loop counts the CDQ retired before it runs them (it cannot fault), and the IDIV as it
/// retires, or rolls EIP back to it on #DE.
#[inline(always)]
fn cdq_then_idiv(cpu: &mut Cpu, i: &Instr) -> Fault {
    arith::cdq(cpu, i)?;
    muldiv::idiv::<RegRm, W32>(cpu, i)
}

/// The branch of a fused compare and Jcc, after the compare retired, exactly as the Jcc handler
/// does it. The run loop counts one retired instruction per handler; the branch counts itself.
#[inline(always)]
fn branch_after_compare(cpu: &mut Cpu, i: &Instr) -> Fault {
    if cpu.flags.cond(i.cc) {
        // EIP is past both instructions: the Jcc's displacement is relative to it.
        let target = cpu.eip.wrapping_add(i.imm2);
        if target > cpu.segs[Segment::CS as usize].limit {
            // The branch faults (#GP): the compare retired alone; the Jcc runs again by itself,
            // as the next block, and raises the fault at its own address.
            cpu.eip = cpu.eip.wrapping_sub((i.len - i.first_len) as u32);
            return Ok(());
        }
        cpu.eip = target;
    }
    cpu.instructions += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::seg::SegCache;
    use crate::cpu::{EAX, EBX, ESI};

    /// A CPU running 32-bit code from `code` at 0x1000, with flat 4 GiB segments (through the
    /// descriptor caches) and registers pointing into RAM.
    fn cpu(code: &[u8]) -> Cpu {
        let mut cpu = Cpu::with_ram(1 << 20);
        cpu.mem.load(0x1000, code);
        for (n, byte) in (0..0x100u32).enumerate() {
            cpu.mem.load(
                0x8000 + 4 * byte,
                &(0x9E37_79B9u32.wrapping_mul(n as u32 + 1)).to_le_bytes(),
            );
        }
        for seg in cpu.segs.iter_mut() {
            let mut s = SegCache::real(0);
            s.big = true;
            s.limit = u32::MAX;
            s.compute_ranges();
            *seg = s;
        }
        cpu.eip = 0x1000;
        cpu.regs[..8].copy_from_slice(&[
            0x8000_0001,
            0x0000_0005,
            0xFFFF_FFF0,
            0x8010,
            0xF000,
            0x8040,
            0x8004,
            0x7FFF_FFFF,
        ]);
        cpu
    }

    /// Everything an instruction can change, for comparison.
    fn state(cpu: &Cpu) -> (Vec<u32>, u32, u32, u64, Vec<u8>) {
        (
            cpu.regs.to_vec(),
            cpu.eip,
            cpu.flags.word(),
            cpu.instructions,
            cpu.mem.ram[0x7000..0x9000].to_vec(),
        )
    }

    /// Run `code`'s first instruction (or fused or folded pair) inline and through the handler
    /// pointers, with the flags set to `flags`, and require the same result, also from the run
    /// loop's [`run`]. Returns the fast kind ([`NONE`] for the forms that only have a handler: they
    /// are checked the same way, through the run loop).
    fn same_both_ways(code: &[u8], flags: u32) -> u8 {
        let mut a = cpu(code);
        a.flags.set_word(flags);
        let (first, _) = a.decode_one(0x1000).expect("decodes");
        // Where each instruction ends in the block (decode_block sets it).
        let second = a
            .decode_one(0x1000 + first.len as u32)
            .ok()
            .map(|(i, _)| Instr {
                end: first.end + u16::from(i.len),
                ..i
            });
        let fused = second.and_then(|s| fuse(&first, &s).or_else(|| fold_cdq(&first, &s)));
        let instr = fused.unwrap_or(first);
        a.eip += u32::from(instr.len) + u32::from(folded_len(&instr));
        let inline = exec(&mut a, &instr);

        let mut b = cpu(code);
        b.flags.set_word(flags);
        b.eip += first.len as u32;
        let mut pointer = (first.exec)(&mut b, &first);
        if let (Some(second), Some(_), Ok(())) = (second, fused, pointer) {
            b.instructions += 1;
            if b.eip == 0x1000 + first.len as u32 {
                b.eip += second.len as u32;
                pointer = (second.exec)(&mut b, &second);
            }
        }
        assert_eq!(inline, pointer, "{code:02x?}: fault");
        assert_eq!(state(&a), state(&b), "{code:02x?} with flags {flags:#x}");

        // The run loop's form: EIP kept aside, the instruction counted as it retires.
        let mut c = cpu(code);
        c.flags.set_word(flags);
        let looped = run(&mut c, std::slice::from_ref(&instr));
        assert_eq!(looped, inline, "{code:02x?}: fault from run");
        if inline.is_ok() {
            a.instructions += 1;
        } else {
            a.eip = 0x1000;
        }
        assert_eq!(
            state(&c),
            state(&a),
            "{code:02x?} from run, flags {flags:#x}"
        );
        instr.fast as u8
    }

    /// C6 and C7 exist only as /0 (MOV); the other encodings are #UD, never a fast MOV.
    #[test]
    fn undefined_mov_immediate_encodings_raise_ud() {
        for code in [
            &[0xC7, 0xC8, 1, 2, 3, 4][..],
            &[0xC7, 0x4B, 0x04, 1, 2, 3, 4],
            &[0xC6, 0xC8, 1],
            &[0xC6, 0x7B, 0x04, 1],
        ] {
            let mut c = cpu(code);
            let (i, _) = c.decode_one(0x1000).expect("decodes");
            assert_eq!(i.fast, NONE, "{code:02x?}");
            let before = state(&c);
            let e = run(&mut c, std::slice::from_ref(&i)).expect_err("#UD");
            assert_eq!(e.vector(), crate::cpu::exception::UD, "{code:02x?}");
            assert_eq!(state(&c), before, "{code:02x?} changed nothing");
        }
    }

    #[test]
    fn every_fast_form_does_what_its_handler_does() {
        let forms: &[&[u8]] = &[
            &[0x89, 0xD8],                      // mov eax, ebx
            &[0x89, 0x43, 0x04],                // mov [ebx+4], eax
            &[0x8B, 0xC3],                      // mov eax, ebx (8B form)
            &[0x8B, 0x44, 0x8B, 0x08],          // mov eax, [ebx+ecx*4+8]
            &[0xBE, 0x78, 0x56, 0x34, 0x12],    // mov esi, 0x12345678
            &[0xC7, 0xC1, 1, 2, 3, 4],          // mov ecx, imm32 (C7 form)
            &[0xC7, 0x03, 1, 2, 3, 4],          // mov dword [ebx], imm32
            &[0x88, 0x63, 0x01],                // mov [ebx+1], ah
            &[0x8A, 0x7B, 0x03],                // mov bh, [ebx+3]
            &[0x0F, 0xB6, 0xC2],                // movzx eax, dl
            &[0x0F, 0xB6, 0x4B, 0x02],          // movzx ecx, byte [ebx+2]
            &[0x0F, 0xB7, 0xC2],                // movzx eax, dx
            &[0x0F, 0xB7, 0x0B],                // movzx ecx, word [ebx]
            &[0x0F, 0xBE, 0xC2],                // movsx eax, dl
            &[0x0F, 0xBE, 0x4B, 0x03],          // movsx ecx, byte [ebx+3]
            &[0x8D, 0x44, 0x58, 0x10],          // lea eax, [eax+ebx*2+0x10]
            &[0x40],                            // inc eax
            &[0x4F],                            // dec edi
            &[0xFF, 0x03],                      // inc dword [ebx]
            &[0xFF, 0x4B, 0x04],                // dec dword [ebx+4]
            &[0x53],                            // push ebx
            &[0x5D],                            // pop ebp
            &[0x74, 0x10],                      // jz +16
            &[0x0F, 0x8C, 0, 1, 0, 0],          // jl +256
            &[0xEB, 0xFE],                      // jmp $
            &[0xE9, 0, 0x10, 0, 0],             // jmp +4096
            &[0xE8, 0x10, 0, 0, 0],             // call +16
            &[0xC3],                            // ret
            &[0x0F, 0xAF, 0xC1],                // imul eax, ecx
            &[0x39, 0x43, 0x08],                // cmp [ebx+8], eax
            &[0x85, 0x4B, 0x08],                // test [ebx+8], ecx
            &[0x81, 0x7B, 0x04, 1, 0, 0, 0x80], // cmp dword [ebx+4], 0x80000001
            &[0xF7, 0xC1, 0xFF, 0, 0, 0],       // test ecx, 0xFF
            &[0xF7, 0x03, 0, 0, 0, 0x80],       // test dword [ebx], 0x80000000
            &[0x80, 0xF9, 0x05],                // cmp cl, 5
            &[0x80, 0x3B, 0x7F],                // cmp byte [ebx], 0x7F
            &[0x84, 0xE4],                      // test ah, ah
            &[0xC1, 0xC0, 0x03],                // rol eax, 3
            &[0xD1, 0xC8],                      // ror eax, 1
            &[0xC1, 0xE0, 0x1F],                // shl eax, 31
            &[0xD1, 0xEA],                      // shr edx, 1
            &[0xC1, 0xFA, 0x04],                // sar edx, 4
            &[0xD3, 0xE0],                      // shl eax, cl
            &[0xD3, 0xEA],                      // shr edx, cl
            &[0xD3, 0xFA],                      // sar edx, cl
            &[0x88, 0xE3],                      // mov bl, ah
            &[0x8A, 0xC7],                      // mov al, bh
            &[0xB4, 0x9C],                      // mov ah, 0x9C
            &[0xC6, 0xC5, 0x81],                // mov ch, 0x81 (C6 form)
            &[0xC6, 0x43, 0x02, 0xFE],          // mov byte [ebx+2], 0xFE
            &[0xF6, 0xC4, 0x80],                // test ah, 0x80
            &[0xF6, 0x43, 0x01, 0x01],          // test byte [ebx+1], 1
            &[0xA8, 0x81],                      // test al, 0x81
            &[0x84, 0x63, 0x05],                // test [ebx+5], ah
            &[0x66, 0x89, 0xD8],                // mov ax, bx
            &[0x66, 0x89, 0x43, 0x06],          // mov [ebx+6], ax
            &[0x66, 0x8B, 0xCA],                // mov cx, dx
            &[0x66, 0x8B, 0x4B, 0x02],          // mov cx, [ebx+2]
            &[0x0F, 0xBF, 0xC2],                // movsx eax, dx
            &[0x0F, 0xBF, 0x4B, 0x02],          // movsx ecx, word [ebx+2]
            &[0x99],                            // cdq
            &[0x99, 0xF7, 0xF9],                // cdq; idiv ecx (folded)
            &[0x98],                            // cwde
            &[0xF7, 0xD0],                      // not eax
            &[0xF7, 0xD8],                      // neg eax
            &[0xF7, 0xE3],                      // mul ebx
            &[0xF7, 0xEB],                      // imul ebx
            &[0xF7, 0xF3],                      // div ebx
            &[0xF7, 0xFB],                      // idiv ebx
            &[0xF7, 0x63, 0x04],                // mul dword [ebx+4]
            &[0xF7, 0x6B, 0x04],                // imul dword [ebx+4]
            &[0xF7, 0x73, 0x04],                // div dword [ebx+4]
            &[0xF7, 0x7B, 0x04],                // idiv dword [ebx+4]
            &[0x0F, 0x94, 0xC0],                // sete al
            &[0x0F, 0x9C, 0x43, 0x01],          // setl byte [ebx+1]
            &[0x0F, 0x44, 0xC3],                // cmove eax, ebx
            &[0x0F, 0x4F, 0x43, 0x04],          // cmovg eax, [ebx+4]
        ];
        let mut alu = Vec::new();
        for op in 0..8u8 {
            alu.push(vec![op << 3 | 1, 0xD8]); // OP eax, ebx
            alu.push(vec![op << 3 | 3, 0xC2]); // OP eax, edx (r, r/m form)
            alu.push(vec![op << 3 | 3, 0x43, 0x04]); // OP eax, [ebx+4]
            alu.push(vec![0x83, 0xC0 | op << 3, 0xF0]); // OP eax, -16
            alu.push(vec![0x81, 0xC2 | op << 3, 1, 0, 0, 0x80]); // OP edx, 0x80000001
            alu.push(vec![op << 3 | 5, 0xFF, 0xFF, 0, 0]); // OP eax, 0xFFFF
            if op != arith::CMP {
                alu.push(vec![op << 3 | 1, 0x4B, 0x08]); // OP [ebx+8], ecx
                alu.push(vec![0x83, 0x43 | op << 3, 0x08, 0x7F]); // OP dword [ebx+8], 0x7F
            }
        }
        for op in 0..8u8 {
            alu.push(vec![op << 3, 0xE3]); // OP bl, ah
            alu.push(vec![op << 3 | 2, 0xC7]); // OP al, bh (r, r/m form)
            alu.push(vec![op << 3 | 2, 0x63, 0x03]); // OP ah, [ebx+3]
            alu.push(vec![op << 3, 0x63, 0x05]); // OP [ebx+5], ah
            alu.push(vec![0x80, 0xC4 | op << 3, 0x81]); // OP ah, 0x81
            alu.push(vec![0x80, 0x43 | op << 3, 0x07, 0x7F]); // OP byte [ebx+7], 0x7F
            alu.push(vec![op << 3 | 4, 0x80]); // OP al, 0x80
        }
        alu.push(vec![0x85, 0xC8]); // test eax, ecx
        alu.push(vec![0xA9, 0, 0, 0, 0x80]); // test eax, 0x80000000
                                             // Compares followed by every condition: fused pairs, taken and not taken.
        let mut pairs = Vec::new();
        for compare in [
            &[0x39, 0xD8][..],
            &[0x85, 0xC0],
            &[0x21, 0xC8],
            &[0x3B, 0xC2],
            &[0x83, 0xF9, 0x05],
            &[0x3D, 0x01, 0, 0, 0x80],
            &[0xA9, 0xFF, 0, 0, 0],
            &[0x3B, 0x43, 0x04],
            &[0x39, 0x43, 0x08],
            &[0x83, 0x7B, 0x04, 0x10],
            &[0x84, 0xDB],
            &[0x80, 0xF9, 0x05],
            &[0x80, 0x3B, 0x80],
            &[0x49],
            &[0x40],
            &[0x29, 0xD8],
            &[0x83, 0xE9, 0x01],
            &[0x83, 0xE0, 0x07],
            &[0x09, 0xC0],
            &[0x83, 0xC1, 0x01],
            &[0xF7, 0xC1, 0x00, 0x01, 0, 0],
            &[0xF7, 0x03, 0, 0, 0, 0x80],
            &[0x85, 0x4B, 0x08],
            &[0x38, 0xE3],
            &[0x38, 0x63, 0x05],
            &[0x3A, 0x63, 0x03],
            &[0x3C, 0x41],
            &[0xF6, 0xC4, 0x80],
            &[0xF6, 0x43, 0x01, 0x01],
            &[0x84, 0x63, 0x05],
        ] {
            for cc in 0..16u8 {
                let mut p = compare.to_vec();
                p.extend_from_slice(&[0x70 | cc, 0x20]);
                pairs.push(p);
            }
        }
        let mut covered = std::collections::BTreeSet::new();
        for flags in [0x2, 0x8D7] {
            for code in forms.iter().copied() {
                covered.insert(same_both_ways(code, flags));
            }
            for code in alu.iter().chain(pairs.iter()) {
                covered.insert(same_both_ways(code, flags));
            }
        }
        let missing: Vec<u8> = (1..=KINDS).filter(|k| !covered.contains(k)).collect();
        assert!(missing.is_empty(), "kinds with no test form: {missing:?}");
    }

    #[test]
    fn memory_forms_with_16_bit_addresses_take_the_handler_and_wrap_at_64_kib() {
        // mov eax, [bx+si+0x10] (a16): BX + SI + 0x10 = 0x1_0008 wraps to 0x0008 (the inline
        // forms compute 32-bit addresses, so this one must not be one)
        for (code, kind) in [
            (&[0x67, 0x8B, 0x40, 0x10][..], MOV_R_RM_MEM),
            (&[0x67, 0x0F, 0xB6, 0x40, 0x10], MOVZX_B_MEM),
            (&[0x67, 0x8D, 0x40, 0x10], LEA),
            (&[0x67, 0xFF, 0x48, 0x10], DEC_M),
        ] {
            let mut c = cpu(code);
            c.regs[EBX] = 0xFFF0;
            c.regs[ESI] = 0x0008;
            c.mem.load(0x0008, &[0x11, 0x22, 0x33, 0x44]);
            c.mem.load(0x1_0008, &[0x55, 0x66, 0x77, 0x88]);
            let (i, _) = c.decode_one(0x1000).expect("decodes");
            assert_eq!(i.fast, NONE, "{code:02x?} with a 16-bit address");
            // The same instruction with a 32-bit address is the inline form.
            let (i32, _) = c.decode_one(0x1001).expect("decodes");
            assert_eq!(i32.fast, kind, "{:02x?} with a 32-bit address", &code[1..]);
            c.eip += i.len as u32;
            run(&mut c, std::slice::from_ref(&i)).expect("runs");
            match kind {
                LEA => assert_eq!(c.regs[EAX], 0x0008),
                MOVZX_B_MEM => assert_eq!(c.regs[EAX], 0x11),
                DEC_M => assert_eq!(c.mem.ram[0x0008], 0x10),
                _ => assert_eq!(c.regs[EAX], 0x4433_2211),
            }
        }
    }

    #[test]
    fn a_fused_branch_beyond_the_code_limit_retires_only_the_compare() {
        // cmp eax, eax ; jz far beyond a 64 KiB code segment
        let mut c = cpu(&[0x39, 0xC0, 0x0F, 0x84, 0, 0, 1, 0]);
        c.segs[Segment::CS as usize].limit = 0xFFFF;
        let (first, _) = c.decode_one(0x1000).unwrap();
        let (second, _) = c.decode_one(0x1002).unwrap();
        let pair = fuse(&first, &second).expect("fuses");
        c.eip += pair.len as u32;
        assert_eq!(exec(&mut c, &pair), Ok(()));
        assert_eq!(
            c.eip, 0x1002,
            "stopped at the Jcc, which faults when it runs alone"
        );
        assert_eq!(c.instructions, 0, "the run loop counts the compare");
        assert!(c.flags.zf());
    }

    /// Flags are left uncomputed only where nothing could read them: not before an instruction
    /// that reads them, may fault (a fault pushes EFLAGS) or may leave the block, nor at the
    /// end of the block; INC and DEC keep CF, so an ADD's CF read after them stays computed.
    #[test]
    fn flags_are_dropped_only_where_nothing_can_read_them() {
        // Each block ends with a JMP $ (a Jcc does not end a block).
        let kinds = |code: &[u8]| -> Vec<Kind> {
            let mut c = cpu(&[code, &[0xEB, 0xFE]].concat());
            let mut arena = Vec::new();
            let block = c.decode_block(&mut arena, 0x1000).expect("decodes");
            arena[block.start..block.start + block.len]
                .iter()
                .map(|i| i.fast)
                .collect()
        };
        // add ecx, 1 ; shl edx, 3 ; xor esi, esi ; cmp eax, ebx ; jne $
        assert_eq!(
            kinds(&[0x83, 0xC1, 0x01, 0xC1, 0xE2, 0x03, 0x31, 0xF6, 0x39, 0xD8, 0x75, 0xFE]),
            vec![
                ALU_R_I_ADD_NF,
                SHIFT_I_R_SHL_NF,
                ALU_RR_XOR_NF,
                FUSED_ALU_RR_CMP,
                JMP_REL
            ]
        );
        // add ecx, 1 ; mov [ebx], eax (may fault) ; cmp eax, ebx ; jne $
        assert_eq!(
            kinds(&[0x83, 0xC1, 0x01, 0x89, 0x03, 0x39, 0xD8, 0x75, 0xFE]),
            vec![ALU_R_I_ADD, MOV_RM_R_MEM, FUSED_ALU_RR_CMP, JMP_REL]
        );
        // add ecx, 1 ; jc $ (reads them)
        assert_eq!(
            kinds(&[0x83, 0xC1, 0x01, 0x72, 0xFE]),
            vec![ALU_R_I_ADD, JCC, JMP_REL]
        );
        // add ecx, 1 ; jmp $ (the code after the block may read them)
        assert_eq!(kinds(&[0x83, 0xC1, 0x01]), vec![ALU_R_I_ADD, JMP_REL]);
        // add ecx, 1 ; inc edx ; sbb eax, eax (reads CF, which INC keeps) ; cmp ; jne $
        assert_eq!(
            kinds(&[0x83, 0xC1, 0x01, 0x42, 0x19, 0xC0, 0x39, 0xD8, 0x75, 0xFE]),
            vec![ALU_R_I_ADD, INC_R_NF, ALU_RR_SBB, FUSED_ALU_RR_CMP, JMP_REL]
        );
        // add ecx, 1 ; shl edx, 0 (leaves the flags) ; shl edx, cl (may) ; cmp ; jne $
        assert_eq!(
            kinds(&[0x83, 0xC1, 0x01, 0xC1, 0xE2, 0x00, 0xD3, 0xE2, 0x39, 0xD8, 0x75, 0xFE]),
            vec![
                ALU_R_I_ADD_NF,
                SHIFT_I_R_SHL,
                SHIFT_CL_R_SHL,
                FUSED_ALU_RR_CMP,
                JMP_REL
            ]
        );
        // The compiling tier gets the forms that set flags.
        let mut c = cpu(&[0x83, 0xC1, 0x01, 0x39, 0xD8, 0x75, 0xFE, 0xEB, 0xFE]);
        let mut arena = Vec::new();
        let block = c.decode_block(&mut arena, 0x1000).expect("decodes");
        let whole = &arena[block.start..block.start + block.len];
        assert_eq!(whole[0].fast, ALU_R_I_ADD_NF);
        assert_eq!(unfold(whole)[0].fast, ALU_R_I_ADD);
    }

    /// Each form that skips its flags computes what its handler computes, flags aside.
    #[test]
    fn forms_without_flags_compute_what_their_handlers_do() {
        let forms: &[&[u8]] = &[
            &[0x83, 0xC1, 0x7F],       // add ecx, 0x7F
            &[0x81, 0xC9, 0, 1, 0, 0], // or ecx, 0x100
            &[0x83, 0xE1, 0xF0],       // and ecx, -16
            &[0x83, 0xE9, 0x05],       // sub ecx, 5
            &[0x01, 0xD8],             // add eax, ebx
            &[0x21, 0xD8],             // and eax, ebx
            &[0x29, 0xD8],             // sub eax, ebx
            &[0x31, 0xD8],             // xor eax, ebx
            &[0x40],                   // inc eax
            &[0x4F],                   // dec edi
            &[0x0F, 0xAF, 0xC1],       // imul eax, ecx
            &[0xC1, 0xE0, 0x1F],       // shl eax, 31
            &[0xC1, 0xEA, 0x03],       // shr edx, 3
            &[0xC1, 0xF8, 0x04],       // sar eax, 4 (EAX negative)
        ];
        let mut covered = Vec::new();
        for code in forms {
            let mut a = cpu(code);
            let (i, _) = a.decode_one(0x1000).expect("decodes");
            let (_, nf) = *WITHOUT_FLAGS
                .iter()
                .find(|(k, _)| *k == i.fast)
                .unwrap_or_else(|| panic!("{code:02x?} has a form without flags"));
            let mut b = cpu(code);
            a.eip += u32::from(i.len);
            b.eip += u32::from(i.len);
            let flags_before = a.flags.word();
            assert_eq!(exec(&mut a, &Instr { fast: nf, ..i }), Ok(()));
            assert_eq!((i.exec)(&mut b, &i), Ok(()));
            assert_eq!(a.regs, b.regs, "{code:02x?}");
            assert_eq!(
                a.flags.word(),
                flags_before,
                "{code:02x?} left the flags alone"
            );
            assert_eq!(with_flags(&Instr { fast: nf, ..i }).fast, i.fast);
            covered.push(nf);
        }
        assert_eq!(
            covered.len(),
            WITHOUT_FLAGS.len(),
            "every form without flags tested"
        );
    }

    /// In a block run by the run loop, a conditional jump taken to beyond the code limit: alone,
    /// it raises #GP with EIP at it and what ran before it retired; fused with the register
    /// compare before it, the compare retires and EIP stops at the jump (which faults when it
    /// then runs alone). Not taken, both go on to the rest of the block.
    #[test]
    fn register_branches_in_a_block_beyond_the_code_limit_stop_at_the_jump() {
        let jz_far = [0x0F, 0x84, 0, 0, 1, 0];
        let run_block = |compare: [u8; 2], eax: u32| {
            // inc eax ; <compare> ; jz +0x10000 ; inc ebx ; jmp $
            let mut code = vec![0x40];
            code.extend(compare);
            code.extend(jz_far);
            code.extend([0x43, 0xEB, 0xFE]);
            let mut c = cpu(&code);
            c.segs[Segment::CS as usize].limit = 0xFFFF;
            c.regs[EAX] = eax;
            let mut arena = Vec::new();
            let block = c.decode_block(&mut arena, 0x1000).expect("decodes");
            let result = run(&mut c, &arena[block.start..block.start + block.len]);
            (c, result)
        };
        // xor ecx, ecx (ZF set; not fused) ; cmp eax, eax (fused)
        for (compare, fused) in [([0x31, 0xC9], false), ([0x39, 0xC0], true)] {
            let (c, result) = run_block(compare, 1);
            if fused {
                assert_eq!(result, Ok(()), "the fused compare retires");
            } else {
                assert_eq!(result, Err(Exception::gp(0)));
            }
            assert_eq!(c.eip, 0x1003, "EIP at the jump");
            assert_eq!(c.instructions, 2, "INC and the compare retired");
            assert_eq!(c.regs[EBX], 0x8010, "nothing after the jump ran");
        }
        // test eax, eax (fused) ; or eax, eax (not fused): ZF clear, as EAX is 0x8000_0000
        for (compare, fused) in [([0x85, 0xC0], true), ([0x09, 0xC0], false)] {
            let (c, result) = run_block(compare, 0x7FFF_FFFF);
            assert_eq!(result, Ok(()), "fused: {fused}");
            assert_eq!(c.regs[EBX], 0x8011, "not taken: the block went on");
            assert_eq!(c.eip, 0x100A, "at the JMP $ that ended the block");
            assert_eq!(c.instructions, 5);
        }
    }
}
