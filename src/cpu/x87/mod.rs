//! The x87 FPU.

pub mod float80;

#[cfg(test)]
mod vector_tests;

use super::decode::{undefined, Decoder, Handler};
use super::exception::Fault;

/// Decode the opcodes of this group.
pub fn decode(_d: &mut Decoder, _op: u16) -> Fault<Handler> {
    Ok(undefined())
}

/// The constants of FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ as (exponent, top 64
/// significand bits, next 64 bits): the hardware keeps more bits than the register holds
/// and rounds them under the rounding control.
const CONSTANTS: [(u16, u64, u64); 7] = [
    (0x3FFF, 0x8000_0000_0000_0000, 0),
    (0x4000, 0xD49A_784B_CD1B_8AFE, 0x492B_F6FF_4DAF_DB4C),
    (0x3FFF, 0xB8AA_3B29_5C17_F0BB, 0xBE87_FED0_691D_3E88),
    (0x4000, 0xC90F_DAA2_2168_C234, 0xC4C6_628B_80DC_1CD1),
    (0x3FFD, 0x9A20_9A84_FBCF_F798, 0x8F89_59AC_0B7C_9178),
    (0x3FFE, 0xB172_17F7_D1CF_79AB, 0xC9E3_B398_03F2_F6AF),
    (0, 0, 0),
];

/// Constant `k` (index into [`CONSTANTS`]) rounded under rounding control `rc`.
pub fn constant(k: u8, rc: u16) -> float80::F80 {
    let (e, hi, lo) = CONSTANTS[k as usize];
    if hi == 0 {
        return float80::F80::ZERO;
    }
    // A scratch context: constant loads report no precision exception.
    let mut c = float80::Ctx::new(0x037F | rc << float80::CW_RC_SHIFT);
    c.round64(false, e as i32, (hi as u128) << 64 | lo as u128)
}
