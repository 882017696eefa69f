//! The hottest instruction forms, run inline by the run loop.
//!
//! Every instruction has a handler pointer chosen at decode time. For the forms that make up most
//! of what compiled 32-bit code executes (register and memory moves, the ALU group, INC/DEC,
//! PUSH/POP, LEA, conditional and direct jumps, CALL/RET, and a compare fused with the Jcc after
//! it), the decoder also records a kind number ([`classify`], [`fuse`]), and the run loop
//! dispatches on it with one dense `match` ([`exec`]) that calls the very same handler functions,
//! inlined. In WebAssembly that `match` is a single `br_table` inside the run loop, where an
//! indirect call costs a table bounds check, a signature check and a call frame; natively it saves
//! the call and lets the compiler keep the CPU pointer in a register. The semantics cannot drift:
//! each arm is the handler itself. The kinds are numbered densely (no ranges, no gaps) so that
//! the `match` stays one jump table.
//!
//! Only 32-bit operand forms (and byte forms) are here: 16-bit code takes the handler pointer.

use super::decode::Instr;
use super::exception::Fault;
use super::operand::{MemRm, RegRm, W32, W8};
use super::{arith, control, data, muldiv, Cpu, Segment};

/// Not a fast form: call the handler pointer.
pub const NONE: u8 = 0;

// The kinds. ALU_<form>_<op>: OP r/m32, r32 (RR, register r/m); OP r32, r/m32 (R_R register,
// R_M memory); OP r/m32, imm (R_I, register r/m); OP EAX, imm32 (A_I). FUSED_<kind>: that
// compare fused with the Jcc after it.
const MOV_RM_R_REG: u8 = 1;
const MOV_RM_R_MEM: u8 = 2;
const MOV_R_RM_REG: u8 = 3;
const MOV_R_RM_MEM: u8 = 4;
const MOV_R_IMM: u8 = 5;
const MOV_RM_R8_MEM: u8 = 6;
const MOV_R_RM8_MEM: u8 = 7;
const MOVZX_B_REG: u8 = 8;
const MOVZX_B_MEM: u8 = 9;
const LEA: u8 = 10;
const INC_R: u8 = 11;
const DEC_R: u8 = 12;
const PUSH_R: u8 = 13;
const POP_R: u8 = 14;
const JCC: u8 = 15;
const JMP_REL: u8 = 16;
const CALL_REL: u8 = 17;
const RET: u8 = 18;
const IMUL_R_RM_REG: u8 = 19;
const CMP_M_R: u8 = 20;
const CMP_M_I: u8 = 21;
const CMP_RM8_I_REG: u8 = 22;
const CMP_RM8_I_MEM: u8 = 23;
const TEST_RR8: u8 = 24;
const ALU_RR_ADD: u8 = 25;
const ALU_RR_OR: u8 = 26;
const ALU_RR_ADC: u8 = 27;
const ALU_RR_SBB: u8 = 28;
const ALU_RR_AND: u8 = 29;
const ALU_RR_SUB: u8 = 30;
const ALU_RR_XOR: u8 = 31;
const ALU_RR_CMP: u8 = 32;
const ALU_RR_TEST: u8 = 33;
const ALU_R_R_ADD: u8 = 34;
const ALU_R_R_OR: u8 = 35;
const ALU_R_R_ADC: u8 = 36;
const ALU_R_R_SBB: u8 = 37;
const ALU_R_R_AND: u8 = 38;
const ALU_R_R_SUB: u8 = 39;
const ALU_R_R_XOR: u8 = 40;
const ALU_R_R_CMP: u8 = 41;
const ALU_R_M_ADD: u8 = 42;
const ALU_R_M_OR: u8 = 43;
const ALU_R_M_ADC: u8 = 44;
const ALU_R_M_SBB: u8 = 45;
const ALU_R_M_AND: u8 = 46;
const ALU_R_M_SUB: u8 = 47;
const ALU_R_M_XOR: u8 = 48;
const ALU_R_M_CMP: u8 = 49;
const ALU_R_I_ADD: u8 = 50;
const ALU_R_I_OR: u8 = 51;
const ALU_R_I_ADC: u8 = 52;
const ALU_R_I_SBB: u8 = 53;
const ALU_R_I_AND: u8 = 54;
const ALU_R_I_SUB: u8 = 55;
const ALU_R_I_XOR: u8 = 56;
const ALU_R_I_CMP: u8 = 57;
const ALU_A_I_ADD: u8 = 58;
const ALU_A_I_OR: u8 = 59;
const ALU_A_I_ADC: u8 = 60;
const ALU_A_I_SBB: u8 = 61;
const ALU_A_I_AND: u8 = 62;
const ALU_A_I_SUB: u8 = 63;
const ALU_A_I_XOR: u8 = 64;
const ALU_A_I_CMP: u8 = 65;
const ALU_A_I_TEST: u8 = 66;
const FUSED_ALU_RR_CMP: u8 = 67;
const FUSED_ALU_RR_TEST: u8 = 68;
const FUSED_ALU_RR_AND: u8 = 69;
const FUSED_ALU_R_R_CMP: u8 = 70;
const FUSED_ALU_R_I_CMP: u8 = 71;
const FUSED_ALU_A_I_CMP: u8 = 72;
const FUSED_ALU_A_I_TEST: u8 = 73;
const FUSED_ALU_R_M_CMP: u8 = 74;
const FUSED_CMP_M_R: u8 = 75;
const FUSED_CMP_M_I: u8 = 76;
const FUSED_TEST_RR8: u8 = 77;
const FUSED_CMP_RM8_I_REG: u8 = 78;
const FUSED_CMP_RM8_I_MEM: u8 = 79;

/// The compares that fuse with a following Jcc, and the fused kind of each.
const FUSABLE: [(u8, u8); 13] = [
    (ALU_RR_CMP, FUSED_ALU_RR_CMP),
    (ALU_RR_TEST, FUSED_ALU_RR_TEST),
    (ALU_RR_AND, FUSED_ALU_RR_AND),
    (ALU_R_R_CMP, FUSED_ALU_R_R_CMP),
    (ALU_R_I_CMP, FUSED_ALU_R_I_CMP),
    (ALU_A_I_CMP, FUSED_ALU_A_I_CMP),
    (ALU_A_I_TEST, FUSED_ALU_A_I_TEST),
    (ALU_R_M_CMP, FUSED_ALU_R_M_CMP),
    (CMP_M_R, FUSED_CMP_M_R),
    (CMP_M_I, FUSED_CMP_M_I),
    (TEST_RR8, FUSED_TEST_RR8),
    (CMP_RM8_I_REG, FUSED_CMP_RM8_I_REG),
    (CMP_RM8_I_MEM, FUSED_CMP_RM8_I_MEM),
];

/// The ALU kinds of one form in operation order (ADD OR ADC SBB AND SUB XOR CMP TEST).
const ALU_RR: [u8; 9] = [
    ALU_RR_ADD,
    ALU_RR_OR,
    ALU_RR_ADC,
    ALU_RR_SBB,
    ALU_RR_AND,
    ALU_RR_SUB,
    ALU_RR_XOR,
    ALU_RR_CMP,
    ALU_RR_TEST,
];
const ALU_R_R: [u8; 8] = [
    ALU_R_R_ADD,
    ALU_R_R_OR,
    ALU_R_R_ADC,
    ALU_R_R_SBB,
    ALU_R_R_AND,
    ALU_R_R_SUB,
    ALU_R_R_XOR,
    ALU_R_R_CMP,
];
const ALU_R_M: [u8; 8] = [
    ALU_R_M_ADD,
    ALU_R_M_OR,
    ALU_R_M_ADC,
    ALU_R_M_SBB,
    ALU_R_M_AND,
    ALU_R_M_SUB,
    ALU_R_M_XOR,
    ALU_R_M_CMP,
];
const ALU_R_I: [u8; 8] = [
    ALU_R_I_ADD,
    ALU_R_I_OR,
    ALU_R_I_ADC,
    ALU_R_I_SBB,
    ALU_R_I_AND,
    ALU_R_I_SUB,
    ALU_R_I_XOR,
    ALU_R_I_CMP,
];
const ALU_A_I: [u8; 9] = [
    ALU_A_I_ADD,
    ALU_A_I_OR,
    ALU_A_I_ADC,
    ALU_A_I_SBB,
    ALU_A_I_AND,
    ALU_A_I_SUB,
    ALU_A_I_XOR,
    ALU_A_I_CMP,
    ALU_A_I_TEST,
];

/// The fast kind of a decoded instruction, or [`NONE`]. `is_reg` says whether its ModR/M byte
/// (if any) selected a register operand. Called only for instructions that decoded without
/// error (so, for example, LOCK on a register form never gets here).
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
    // The ALU operation of opcodes 00-3D is bits 3-5.
    let alu = ((op >> 3) & 7) as usize;
    match op {
        0x89 if is_reg => MOV_RM_R_REG,
        0x89 => MOV_RM_R_MEM,
        0x8B if is_reg => MOV_R_RM_REG,
        0x8B => MOV_R_RM_MEM,
        0xB8..=0xBF => MOV_R_IMM,
        0x0FB6 if is_reg => MOVZX_B_REG,
        0x0FB6 => MOVZX_B_MEM,
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
        // OP r/m, r (low bits 001) and TEST r/m, r (85).
        0x01 | 0x09 | 0x11 | 0x19 | 0x21 | 0x29 | 0x31 | 0x39 if is_reg => ALU_RR[alu],
        0x85 if is_reg => ALU_RR_TEST,
        0x39 => CMP_M_R,
        // OP r, r/m (low bits 011).
        0x03 | 0x0B | 0x13 | 0x1B | 0x23 | 0x2B | 0x33 | 0x3B if is_reg => ALU_R_R[alu],
        0x03 | 0x0B | 0x13 | 0x1B | 0x23 | 0x2B | 0x33 | 0x3B => ALU_R_M[alu],
        0x81 | 0x83 if is_reg => ALU_R_I[(i.reg & 7) as usize],
        0x81 | 0x83 if i.reg == arith::CMP => CMP_M_I,
        // OP EAX, imm32 (low bits 101) and TEST EAX, imm32 (A9).
        0x05 | 0x0D | 0x15 | 0x1D | 0x25 | 0x2D | 0x35 | 0x3D => ALU_A_I[alu],
        0xA9 => ALU_A_I_TEST,
        _ => NONE,
    }
}

/// Fuse `first` (a compare) with `second` (the Jcc right after it in the same block) into one
/// instruction, if both are fast forms that fuse and have the same operand size.
pub fn fuse(first: &Instr, second: &Instr) -> Option<Instr> {
    if second.fast != JCC || first.op32 != second.op32 {
        return None;
    }
    let &(_, fused) = FUSABLE.iter().find(|(k, _)| *k == first.fast)?;
    Some(Instr {
        fast: fused,
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
    i.fast >= FUSABLE[0].1
}

/// The compare of a fused pair, alone: for single-stepping, which must stop between the two.
pub fn first_of_fused(i: &Instr) -> Instr {
    let kind = FUSABLE
        .iter()
        .find(|(_, f)| *f == i.fast)
        .map_or(NONE, |(k, _)| *k);
    Instr {
        fast: kind,
        len: i.first_len,
        ..*i
    }
}

/// Execute one decoded instruction: inline if it is a fast form, else through its handler.
#[inline(always)]
pub(crate) fn exec(cpu: &mut Cpu, i: &Instr) -> Fault {
    match i.fast {
        MOV_RM_R_REG => data::mov_rm_r::<RegRm, W32>(cpu, i),
        MOV_RM_R_MEM => data::mov_rm_r::<MemRm, W32>(cpu, i),
        MOV_R_RM_REG => data::mov_r_rm::<RegRm, W32>(cpu, i),
        MOV_R_RM_MEM => data::mov_r_rm::<MemRm, W32>(cpu, i),
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
        ALU_RR_ADD => arith::alu_rm_r::<RegRm, W32, { arith::ADD }>(cpu, i),
        ALU_RR_OR => arith::alu_rm_r::<RegRm, W32, { arith::OR }>(cpu, i),
        ALU_RR_ADC => arith::alu_rm_r::<RegRm, W32, { arith::ADC }>(cpu, i),
        ALU_RR_SBB => arith::alu_rm_r::<RegRm, W32, { arith::SBB }>(cpu, i),
        ALU_RR_AND => arith::alu_rm_r::<RegRm, W32, { arith::AND }>(cpu, i),
        ALU_RR_SUB => arith::alu_rm_r::<RegRm, W32, { arith::SUB }>(cpu, i),
        ALU_RR_XOR => arith::alu_rm_r::<RegRm, W32, { arith::XOR }>(cpu, i),
        ALU_RR_CMP => arith::alu_rm_r::<RegRm, W32, { arith::CMP }>(cpu, i),
        ALU_RR_TEST => arith::alu_rm_r::<RegRm, W32, { arith::TEST }>(cpu, i),
        ALU_R_R_ADD => arith::alu_r_rm::<RegRm, W32, { arith::ADD }>(cpu, i),
        ALU_R_R_OR => arith::alu_r_rm::<RegRm, W32, { arith::OR }>(cpu, i),
        ALU_R_R_ADC => arith::alu_r_rm::<RegRm, W32, { arith::ADC }>(cpu, i),
        ALU_R_R_SBB => arith::alu_r_rm::<RegRm, W32, { arith::SBB }>(cpu, i),
        ALU_R_R_AND => arith::alu_r_rm::<RegRm, W32, { arith::AND }>(cpu, i),
        ALU_R_R_SUB => arith::alu_r_rm::<RegRm, W32, { arith::SUB }>(cpu, i),
        ALU_R_R_XOR => arith::alu_r_rm::<RegRm, W32, { arith::XOR }>(cpu, i),
        ALU_R_R_CMP => arith::alu_r_rm::<RegRm, W32, { arith::CMP }>(cpu, i),
        ALU_R_M_ADD => arith::alu_r_rm::<MemRm, W32, { arith::ADD }>(cpu, i),
        ALU_R_M_OR => arith::alu_r_rm::<MemRm, W32, { arith::OR }>(cpu, i),
        ALU_R_M_ADC => arith::alu_r_rm::<MemRm, W32, { arith::ADC }>(cpu, i),
        ALU_R_M_SBB => arith::alu_r_rm::<MemRm, W32, { arith::SBB }>(cpu, i),
        ALU_R_M_AND => arith::alu_r_rm::<MemRm, W32, { arith::AND }>(cpu, i),
        ALU_R_M_SUB => arith::alu_r_rm::<MemRm, W32, { arith::SUB }>(cpu, i),
        ALU_R_M_XOR => arith::alu_r_rm::<MemRm, W32, { arith::XOR }>(cpu, i),
        ALU_R_M_CMP => arith::alu_r_rm::<MemRm, W32, { arith::CMP }>(cpu, i),
        ALU_R_I_ADD => arith::alu_rm_i::<RegRm, W32, { arith::ADD }>(cpu, i),
        ALU_R_I_OR => arith::alu_rm_i::<RegRm, W32, { arith::OR }>(cpu, i),
        ALU_R_I_ADC => arith::alu_rm_i::<RegRm, W32, { arith::ADC }>(cpu, i),
        ALU_R_I_SBB => arith::alu_rm_i::<RegRm, W32, { arith::SBB }>(cpu, i),
        ALU_R_I_AND => arith::alu_rm_i::<RegRm, W32, { arith::AND }>(cpu, i),
        ALU_R_I_SUB => arith::alu_rm_i::<RegRm, W32, { arith::SUB }>(cpu, i),
        ALU_R_I_XOR => arith::alu_rm_i::<RegRm, W32, { arith::XOR }>(cpu, i),
        ALU_R_I_CMP => arith::alu_rm_i::<RegRm, W32, { arith::CMP }>(cpu, i),
        ALU_A_I_ADD => arith::alu_a_i::<W32, { arith::ADD }>(cpu, i),
        ALU_A_I_OR => arith::alu_a_i::<W32, { arith::OR }>(cpu, i),
        ALU_A_I_ADC => arith::alu_a_i::<W32, { arith::ADC }>(cpu, i),
        ALU_A_I_SBB => arith::alu_a_i::<W32, { arith::SBB }>(cpu, i),
        ALU_A_I_AND => arith::alu_a_i::<W32, { arith::AND }>(cpu, i),
        ALU_A_I_SUB => arith::alu_a_i::<W32, { arith::SUB }>(cpu, i),
        ALU_A_I_XOR => arith::alu_a_i::<W32, { arith::XOR }>(cpu, i),
        ALU_A_I_CMP => arith::alu_a_i::<W32, { arith::CMP }>(cpu, i),
        ALU_A_I_TEST => arith::alu_a_i::<W32, { arith::TEST }>(cpu, i),
        FUSED_ALU_RR_CMP => {
            compare_and_branch(cpu, i, arith::alu_rm_r::<RegRm, W32, { arith::CMP }>)
        }
        FUSED_ALU_RR_TEST => {
            compare_and_branch(cpu, i, arith::alu_rm_r::<RegRm, W32, { arith::TEST }>)
        }
        FUSED_ALU_RR_AND => {
            compare_and_branch(cpu, i, arith::alu_rm_r::<RegRm, W32, { arith::AND }>)
        }
        FUSED_ALU_R_R_CMP => {
            compare_and_branch(cpu, i, arith::alu_r_rm::<RegRm, W32, { arith::CMP }>)
        }
        FUSED_ALU_R_I_CMP => {
            compare_and_branch(cpu, i, arith::alu_rm_i::<RegRm, W32, { arith::CMP }>)
        }
        FUSED_ALU_A_I_CMP => compare_and_branch(cpu, i, arith::alu_a_i::<W32, { arith::CMP }>),
        FUSED_ALU_A_I_TEST => compare_and_branch(cpu, i, arith::alu_a_i::<W32, { arith::TEST }>),
        FUSED_ALU_R_M_CMP => {
            compare_and_branch(cpu, i, arith::alu_r_rm::<MemRm, W32, { arith::CMP }>)
        }
        FUSED_CMP_M_R => compare_and_branch(cpu, i, arith::alu_rm_r::<MemRm, W32, { arith::CMP }>),
        FUSED_CMP_M_I => compare_and_branch(cpu, i, arith::alu_rm_i::<MemRm, W32, { arith::CMP }>),
        FUSED_TEST_RR8 => compare_and_branch(cpu, i, arith::alu_rm_r::<RegRm, W8, { arith::TEST }>),
        FUSED_CMP_RM8_I_REG => {
            compare_and_branch(cpu, i, arith::alu_rm_i::<RegRm, W8, { arith::CMP }>)
        }
        FUSED_CMP_RM8_I_MEM => {
            compare_and_branch(cpu, i, arith::alu_rm_i::<MemRm, W8, { arith::CMP }>)
        }
        _ => (i.exec)(cpu, i),
    }
}

/// A fused compare and Jcc: the compare (which may fault: then neither retired), then the
/// branch, exactly as the Jcc handler does it. The run loop counts one retired instruction per
/// handler; the branch counts itself.
#[inline(always)]
fn compare_and_branch(
    cpu: &mut Cpu,
    i: &Instr,
    compare: impl FnOnce(&mut Cpu, &Instr) -> Fault,
) -> Fault {
    compare(cpu, i)?;
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
