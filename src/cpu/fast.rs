//! The hottest instruction forms, run inline by the run loop.
//!
//! Every instruction has a handler pointer chosen at decode time. For the few dozen forms that
//! make up most of what compiled 32-bit code executes (register and memory moves, the ALU group
//! on registers, INC/DEC, PUSH/POP, LEA, conditional and direct jumps, CALL/RET), the decoder
//! also records a small kind number ([`classify`]), and the run loop dispatches on it with a
//! `match` ([`exec`]) that calls the very same handler functions, inlined. In WebAssembly a
//! `match` is a `br_table` inside the run loop, where an indirect call costs a table bounds check,
//! a signature check and a call frame; natively it saves the call and lets the compiler keep
//! the CPU pointer in a register. The semantics cannot drift: each arm is the handler itself.
//!
//! Only 32-bit operand forms (and byte forms) are here: 16-bit code takes the handler pointer.

use super::decode::Instr;
use super::exception::Fault;
use super::operand::{MemRm, RegRm, W32, W8};
use super::{arith, control, data, muldiv, Cpu};

/// Not a fast form: call the handler pointer.
pub const NONE: u8 = 0;

// Kind numbers. The ALU families take eight (or nine, with TEST) consecutive numbers, in the
// order of the operation numbers in arith.rs (ADD OR ADC SBB AND SUB XOR CMP, then TEST).
const MOV_RM_R_REG: u8 = 1;
const MOV_RM_R_MEM: u8 = 2;
const MOV_R_RM_MEM: u8 = 3;
const MOV_R_IMM: u8 = 4;
const MOV_RM_R8_MEM: u8 = 5;
const MOV_R_RM8_MEM: u8 = 6;
const MOVZX_B_REG: u8 = 7;
const MOVZX_B_MEM: u8 = 8;
const LEA: u8 = 9;
const INC_R: u8 = 10;
const DEC_R: u8 = 11;
const PUSH_R: u8 = 12;
const POP_R: u8 = 13;
const JCC: u8 = 14;
const JMP_REL: u8 = 15;
const CALL_REL: u8 = 16;
const RET: u8 = 17;
const IMUL_R_RM_REG: u8 = 18;
/// OP r/m32, r32 with a register r/m: 9 kinds (TEST last).
const ALU_RR: u8 = 20;
/// OP r32, r/m32 with a memory r/m: 8 kinds.
const ALU_R_M: u8 = 29;
/// OP r/m32, imm with a register r/m: 8 kinds.
const ALU_R_I: u8 = 37;
/// CMP r/m32, r32 and CMP r/m32, imm with a memory r/m.
const CMP_M_R: u8 = 45;
const CMP_M_I: u8 = 46;
/// CMP r/m8, imm8 (register or memory) and TEST r/m8, r8 with a register r/m.
const CMP_RM8_I_REG: u8 = 47;
const CMP_RM8_I_MEM: u8 = 48;
const TEST_RR8: u8 = 49;
/// OP EAX, imm32: 9 kinds (TEST last).
const ALU_A_I: u8 = 50;
/// MOV r32, r32 in its 8B form (reg is the destination).
const MOV_R_RM_REG: u8 = 59;
/// OP r32, r/m32 with a register r/m: 8 kinds.
const ALU_R_R: u8 = 60;
/// A compare (one of [`FUSABLE`]) fused with the Jcc after it: `FUSED + compare kind`.
const FUSED: u8 = 128;

/// The compares that fuse with a following Jcc.
const FUSABLE: [u8; 13] = [
    ALU_RR + arith::CMP,
    ALU_RR + arith::TEST,
    ALU_R_R + arith::CMP,
    ALU_R_I + arith::CMP,
    ALU_A_I + arith::CMP,
    ALU_A_I + arith::TEST,
    ALU_R_M + arith::CMP,
    CMP_M_R,
    CMP_M_I,
    TEST_RR8,
    CMP_RM8_I_REG,
    CMP_RM8_I_MEM,
    ALU_RR + arith::AND,
];

/// The fast kind of a decoded instruction, or [`NONE`]. `is_reg` says whether its ModR/M byte
/// (if any) selected a register operand.
pub fn classify(i: &Instr, is_reg: bool) -> u8 {
    let op = i.opcode;
    let mem = !is_reg;
    // Byte forms do not depend on the operand size.
    match op {
        0x88 if mem => return MOV_RM_R8_MEM,
        0x8A if mem => return MOV_R_RM8_MEM,
        0x80 if i.reg == arith::CMP => return if mem { CMP_RM8_I_MEM } else { CMP_RM8_I_REG },
        0x84 if is_reg => return TEST_RR8,
        _ => {}
    }
    if !i.op32 {
        return NONE;
    }
    match op {
        0x89 => {
            if is_reg {
                MOV_RM_R_REG
            } else {
                MOV_RM_R_MEM
            }
        }
        0x8B => {
            if is_reg {
                MOV_R_RM_REG
            } else {
                MOV_R_RM_MEM
            }
        }
        0xB8..=0xBF => MOV_R_IMM,
        0x0FB6 => {
            if is_reg {
                MOVZX_B_REG
            } else {
                MOVZX_B_MEM
            }
        }
        // The register form of LEA is #UD.
        0x8D if mem => LEA,
        0x40..=0x47 => INC_R,
        0x48..=0x4F => DEC_R,
        0x50..=0x57 => PUSH_R,
        0x58..=0x5F => POP_R,
        0x70..=0x7F | 0x0F80..=0x0F8F => JCC,
        0xE9 | 0xEB => JMP_REL,
        0xE8 => CALL_REL,
        0xC3 => RET,
        0x0FAF if is_reg => IMUL_R_RM_REG,
        // OP r/m, r (00-39 with low bits 001) and TEST r/m, r (85).
        0x01 | 0x09 | 0x11 | 0x19 | 0x21 | 0x29 | 0x31 | 0x39 if is_reg => ALU_RR + (op >> 3) as u8,
        0x85 if is_reg => ALU_RR + arith::TEST,
        0x39 => CMP_M_R,
        // OP r, r/m (low bits 011) with memory: the register form is ALU_RR's mirror image.
        0x03 | 0x0B | 0x13 | 0x1B | 0x23 | 0x2B | 0x33 | 0x3B => {
            (if is_reg { ALU_R_R } else { ALU_R_M }) + (op >> 3) as u8
        }
        0x81 | 0x83 if is_reg => ALU_R_I + i.reg,
        0x81 | 0x83 if i.reg == arith::CMP => CMP_M_I,
        0x05 | 0x0D | 0x15 | 0x1D | 0x25 | 0x2D | 0x35 | 0x3D => ALU_A_I + (op >> 3) as u8,
        0xA9 => ALU_A_I + arith::TEST,
        _ => NONE,
    }
}

/// Fuse `first` (a compare) with `second` (the Jcc right after it in the same block) into one
/// instruction, if both are fast forms that fuse and have the same operand size.
pub fn fuse(first: &Instr, second: &Instr) -> Option<Instr> {
    if second.fast != JCC || !FUSABLE.contains(&first.fast) || first.op32 != second.op32 {
        return None;
    }
    Some(Instr {
        fast: FUSED + first.fast,
        cc: second.reg,
        imm2: second.imm,
        first_len: first.len,
        len: first.len + second.len,
        ..*first
    })
}

/// Whether `i` is a fused compare and branch (two instructions).
#[inline(always)]
pub fn is_fused(i: &Instr) -> bool {
    i.fast >= FUSED
}

/// The compare of a fused pair, alone: for single-stepping, which must stop between the two.
pub fn first_of_fused(i: &Instr) -> Instr {
    Instr {
        fast: i.fast - FUSED,
        len: i.first_len,
        ..*i
    }
}

/// `f::<..., K>` for K the ALU operation `k - base` (0..=8).
macro_rules! alu_arm {
    ($cpu:expr, $i:expr, $k:expr, $base:expr, $f:ident::<$($t:ty),*>) => {
        match $k - $base {
            0 => arith::$f::<$($t,)* { arith::ADD }>($cpu, $i),
            1 => arith::$f::<$($t,)* { arith::OR }>($cpu, $i),
            2 => arith::$f::<$($t,)* { arith::ADC }>($cpu, $i),
            3 => arith::$f::<$($t,)* { arith::SBB }>($cpu, $i),
            4 => arith::$f::<$($t,)* { arith::AND }>($cpu, $i),
            5 => arith::$f::<$($t,)* { arith::SUB }>($cpu, $i),
            6 => arith::$f::<$($t,)* { arith::XOR }>($cpu, $i),
            7 => arith::$f::<$($t,)* { arith::CMP }>($cpu, $i),
            _ => arith::$f::<$($t,)* { arith::TEST }>($cpu, $i),
        }
    };
}

/// Execute one decoded instruction: inline if it is a fast form, else through its handler.
#[inline(always)]
pub(crate) fn exec(cpu: &mut Cpu, i: &Instr) -> Fault {
    match i.fast {
        NONE => (i.exec)(cpu, i),
        MOV_RM_R_REG => data::mov_rm_r::<RegRm, W32>(cpu, i),
        MOV_RM_R_MEM => data::mov_rm_r::<MemRm, W32>(cpu, i),
        MOV_R_RM_MEM => data::mov_r_rm::<MemRm, W32>(cpu, i),
        MOV_R_RM_REG => data::mov_r_rm::<RegRm, W32>(cpu, i),
        MOV_R_IMM => data::mov_r_imm::<W32>(cpu, i),
        MOV_RM_R8_MEM => data::mov_rm_r::<MemRm, W8>(cpu, i),
        MOV_R_RM8_MEM => data::mov_r_rm::<MemRm, W8>(cpu, i),
        MOVZX_B_REG => data::movzx_b::<RegRm, W32>(cpu, i),
        MOVZX_B_MEM => data::movzx_b::<MemRm, W32>(cpu, i),
        LEA => data::lea::<W32>(cpu, i),
        INC_R => arith::incdec_r::<W32, false>(cpu, i),
        DEC_R => arith::incdec_r::<W32, true>(cpu, i),
        PUSH_R => data::push_reg::<W32>(cpu, i),
        POP_R => data::pop_reg::<W32>(cpu, i),
        JCC => control::jcc::<W32>(cpu, i),
        JMP_REL => control::jmp_rel::<W32>(cpu, i),
        CALL_REL => control::call_rel::<W32>(cpu, i),
        RET => control::ret_near::<W32>(cpu, i),
        IMUL_R_RM_REG => muldiv::imul_r_rm::<RegRm, W32>(cpu, i),
        CMP_M_R => arith::alu_rm_r::<MemRm, W32, { arith::CMP }>(cpu, i),
        CMP_M_I => arith::alu_rm_i::<MemRm, W32, { arith::CMP }>(cpu, i),
        CMP_RM8_I_REG => arith::alu_rm_i::<RegRm, W8, { arith::CMP }>(cpu, i),
        CMP_RM8_I_MEM => arith::alu_rm_i::<MemRm, W8, { arith::CMP }>(cpu, i),
        TEST_RR8 => arith::alu_rm_r::<RegRm, W8, { arith::TEST }>(cpu, i),
        k @ ALU_RR..=28 => alu_arm!(cpu, i, k, ALU_RR, alu_rm_r::<RegRm, W32>),
        k @ ALU_R_M..=36 => alu_arm!(cpu, i, k, ALU_R_M, alu_r_rm::<MemRm, W32>),
        k @ ALU_R_I..=44 => alu_arm!(cpu, i, k, ALU_R_I, alu_rm_i::<RegRm, W32>),
        k @ ALU_A_I..=58 => alu_arm!(cpu, i, k, ALU_A_I, alu_a_i::<W32>),
        k @ ALU_R_R..=67 => alu_arm!(cpu, i, k, ALU_R_R, alu_r_rm::<RegRm, W32>),
        k if k >= FUSED => compare_and_branch(cpu, i, k - FUSED),
        _ => (i.exec)(cpu, i),
    }
}

/// A fused compare and Jcc: the compare (which may fault: then neither retired), then the
/// branch, exactly as the Jcc handler does it. The run loop counts one retired instruction per
/// handler; the branch counts itself.
#[inline(always)]
fn compare_and_branch(cpu: &mut Cpu, i: &Instr, compare: u8) -> Fault {
    match compare {
        k if k == ALU_RR + arith::CMP => arith::alu_rm_r::<RegRm, W32, { arith::CMP }>(cpu, i),
        k if k == ALU_RR + arith::TEST => arith::alu_rm_r::<RegRm, W32, { arith::TEST }>(cpu, i),
        k if k == ALU_RR + arith::AND => arith::alu_rm_r::<RegRm, W32, { arith::AND }>(cpu, i),
        k if k == ALU_R_R + arith::CMP => arith::alu_r_rm::<RegRm, W32, { arith::CMP }>(cpu, i),
        k if k == ALU_R_I + arith::CMP => arith::alu_rm_i::<RegRm, W32, { arith::CMP }>(cpu, i),
        k if k == ALU_A_I + arith::CMP => arith::alu_a_i::<W32, { arith::CMP }>(cpu, i),
        k if k == ALU_A_I + arith::TEST => arith::alu_a_i::<W32, { arith::TEST }>(cpu, i),
        k if k == ALU_R_M + arith::CMP => arith::alu_r_rm::<MemRm, W32, { arith::CMP }>(cpu, i),
        CMP_M_R => arith::alu_rm_r::<MemRm, W32, { arith::CMP }>(cpu, i),
        CMP_M_I => arith::alu_rm_i::<MemRm, W32, { arith::CMP }>(cpu, i),
        TEST_RR8 => arith::alu_rm_r::<RegRm, W8, { arith::TEST }>(cpu, i),
        CMP_RM8_I_REG => arith::alu_rm_i::<RegRm, W8, { arith::CMP }>(cpu, i),
        _ => arith::alu_rm_i::<MemRm, W8, { arith::CMP }>(cpu, i),
    }?;
    if cpu.flags.cond(i.cc) {
        // EIP is past both instructions: the Jcc's displacement is relative to it.
        let target = cpu.eip.wrapping_add(i.imm2);
        if target > cpu.segs[super::Segment::CS as usize].limit {
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
