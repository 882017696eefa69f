//! Bit instructions: BT/BTS/BTR/BTC, BSF/BSR, and the atomic-exchange family CMPXCHG, XADD,
//! CMPXCHG8B, plus BSWAP.
//!
//! With a register bit offset and a memory operand, BTx address a bit string: the offset is
//! signed and selects a word/dword before or after the operand's address.

use super::arith::v_k;
use super::decode::{undefined, Decoder, Handler, Instr};
use super::exception::Fault;
use super::flags::{CF, ZF};
use super::operand::{MemRm, RegRm, Rm, Width, W16, W32};
use super::{Cpu, EAX, EBX, ECX, EDX};

/// BTx operations: which bit update follows the test.
const BT: u8 = 0;
const BTS: u8 = 1;
const BTR: u8 = 2;
const BTC: u8 = 3;

/// Pick the BTx handler with a register bit offset (memory operands address a bit string).
macro_rules! bt_reg_sel {
    ($d:expr, $k:expr) => {
        match ($d.is_reg(), $d.i.op32) {
            (true, false) => bt_r_r::<W16, { $k }> as Handler,
            (true, true) => bt_r_r::<W32, { $k }> as Handler,
            (false, false) => bt_m_r::<W16, { $k }> as Handler,
            (false, true) => bt_m_r::<W32, { $k }> as Handler,
        }
    };
}

/// Decode the opcodes of this group.
pub fn decode(d: &mut Decoder, op: u16) -> Fault<Handler> {
    Ok(match op {
        0x0FA3 => {
            d.modrm()?;
            bt_reg_sel!(d, BT)
        }
        0x0FAB | 0x0FB3 | 0x0FBB => {
            d.modrm()?;
            d.allow_lock();
            match op {
                0x0FAB => bt_reg_sel!(d, BTS),
                0x0FB3 => bt_reg_sel!(d, BTR),
                _ => bt_reg_sel!(d, BTC),
            }
        }
        0x0FBA => {
            d.modrm()?;
            d.imm8()?;
            match d.i.reg {
                4 => v_k!(d, bt_imm, BT),
                5 => {
                    d.allow_lock();
                    v_k!(d, bt_imm, BTS)
                }
                6 => {
                    d.allow_lock();
                    v_k!(d, bt_imm, BTR)
                }
                7 => {
                    d.allow_lock();
                    v_k!(d, bt_imm, BTC)
                }
                _ => undefined(),
            }
        }
        0x0FBC => {
            d.modrm()?;
            v_k!(d, bit_scan, false)
        }
        0x0FBD => {
            d.modrm()?;
            v_k!(d, bit_scan, true)
        }
        0x0FB0 => {
            d.modrm()?;
            d.allow_lock();
            crate::rm_b!(d, cmpxchg)
        }
        0x0FB1 => {
            d.modrm()?;
            d.allow_lock();
            crate::rm_v!(d, cmpxchg)
        }
        0x0FC0 => {
            d.modrm()?;
            d.allow_lock();
            crate::rm_b!(d, xadd)
        }
        0x0FC1 => {
            d.modrm()?;
            d.allow_lock();
            crate::rm_v!(d, xadd)
        }
        0x0FC7 => {
            d.modrm()?;
            if d.is_reg() || d.i.reg != 1 {
                undefined()
            } else {
                d.allow_lock();
                cmpxchg8b
            }
        }
        0x0FC8..=0x0FCF => {
            d.i.reg = (op & 7) as u8;
            if d.i.op32 {
                bswap
            } else {
                bswap16
            }
        }
        _ => undefined(),
    })
}

// ---- BT, BTS, BTR, BTC ----

/// Apply BTx operation K to bit `n` of `v`: returns (tested bit, new value).
#[inline(always)]
fn bt_apply<const K: u8>(v: u32, n: u32) -> (bool, u32) {
    let m = 1u32 << n;
    let new = match K {
        BTS => v | m,
        BTR => v & !m,
        BTC => v ^ m,
        _ => v,
    };
    (v & m != 0, new)
}

/// CF = the tested bit; ZF is unaffected and OF SF AF PF are undefined (left unchanged).
#[inline(always)]
fn bt_flags(cpu: &mut Cpu, b: bool) {
    cpu.flags.set(CF, b);
}

/// BTx reg, reg: the offset is taken modulo the operand width.
fn bt_r_r<W: Width, const K: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let n = W::reg(cpu, i.reg) & (W::BITS - 1);
    let (b, new) = bt_apply::<K>(W::reg(cpu, i.rm), n);
    if K != BT {
        W::set_reg(cpu, i.rm, new);
    }
    bt_flags(cpu, b);
    Ok(())
}

/// BTx mem, reg: the signed offset selects the word/dword at ea + (offset >> log2 W) * size.
fn bt_m_r<W: Width, const K: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let off = W::sext(W::reg(cpu, i.reg)) as i32;
    let log2 = W::BITS.trailing_zeros();
    let delta = ((off >> log2) as u32).wrapping_mul(W::BYTES);
    let mut ea = i.ea(cpu).wrapping_add(delta);
    if !i.addr32 {
        ea &= 0xFFFF;
    }
    let n = off as u32 & (W::BITS - 1);
    let seg = i.seg as usize;
    let b = if K == BT {
        let v = W::read_mem(cpu, seg, ea)?;
        bt_apply::<K>(v, n).0
    } else {
        let lin = cpu.probe_write(seg, ea, W::BYTES)?;
        let v = W::read_lin(cpu, lin)?;
        let (b, new) = bt_apply::<K>(v, n);
        W::write_lin(cpu, lin, new)?;
        b
    };
    bt_flags(cpu, b);
    Ok(())
}

/// BTx r/m, imm8: the offset is masked to the operand width (no bit-string addressing).
fn bt_imm<R: Rm, W: Width, const K: u8>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let n = i.imm & (W::BITS - 1);
    let b = if K == BT {
        let v = R::read::<W>(cpu, i)?;
        bt_apply::<K>(v, n).0
    } else {
        let mut b = false;
        R::rmw::<W>(cpu, i, |_, v| {
            let (t, new) = bt_apply::<K>(v, n);
            b = t;
            new
        })?;
        b
    };
    bt_flags(cpu, b);
    Ok(())
}

// ---- BSF, BSR ----

/// BSF (REVERSE = false) / BSR reg, r/m: index of the lowest/highest set bit. A zero source sets
/// ZF and leaves the destination unchanged. CF OF SF AF PF are undefined.
fn bit_scan<R: Rm, W: Width, const REVERSE: bool>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let v = R::read::<W>(cpu, i)?;
    if v != 0 {
        let n = if REVERSE {
            31 - v.leading_zeros()
        } else {
            v.trailing_zeros()
        };
        W::set_reg(cpu, i.reg, n);
    }
    // ZF = (source == 0); the other flags are undefined and follow the source like a logic op.
    cpu.flags.set_logic(W::BITS, v);
    Ok(())
}

// ---- CMPXCHG, XADD, CMPXCHG8B ----

/// CMPXCHG r/m, reg: compare the accumulator with r/m (flags as CMP); if equal r/m = reg, else
/// accumulator = r/m. Memory is always written (with its old value when not equal).
fn cmpxchg<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let src = W::reg(cpu, i.reg);
    R::rmw::<W>(cpu, i, |cpu, dst| {
        let acc = W::reg(cpu, EAX as u8);
        cpu.flags.set_sub(W::BITS, acc, dst, acc.wrapping_sub(dst));
        if acc == dst {
            src
        } else {
            W::set_reg(cpu, EAX as u8, dst);
            dst
        }
    })
}

/// XADD r/m, reg: reg = old r/m, r/m = old r/m + reg (flags as ADD).
fn xadd<R: Rm, W: Width>(cpu: &mut Cpu, i: &Instr) -> Fault {
    let src = W::reg(cpu, i.reg);
    R::rmw::<W>(cpu, i, |cpu, dst| {
        let r = dst.wrapping_add(src);
        cpu.flags.set_add(W::BITS, dst, src, r);
        W::set_reg(cpu, i.reg, dst);
        r & W::MASK
    })
}

/// CMPXCHG8B m64: if EDX:EAX == m64 then m64 = ECX:EBX, ZF = 1; else EDX:EAX = m64, ZF = 0.
/// Memory is always written (with its old value when not equal), so the write check comes first.
fn cmpxchg8b(cpu: &mut Cpu, i: &Instr) -> Fault {
    let off = i.ea(cpu);
    let lin = cpu.probe_write(i.seg as usize, off, 8)?;
    let lo = cpu.read_lin::<4>(lin)?;
    let hi = cpu.read_lin::<4>(lin.wrapping_add(4))?;
    let equal = lo == cpu.regs[EAX] && hi == cpu.regs[EDX];
    let (nlo, nhi) = if equal {
        (cpu.regs[EBX], cpu.regs[ECX])
    } else {
        (lo, hi)
    };
    cpu.write_lin::<4>(lin, nlo)?;
    cpu.write_lin::<4>(lin.wrapping_add(4), nhi)?;
    if !equal {
        cpu.regs[EAX] = lo;
        cpu.regs[EDX] = hi;
    }
    cpu.flags.set(ZF, equal);
    Ok(())
}

// ---- BSWAP ----

/// BSWAP r32: reverse the byte order.
fn bswap(cpu: &mut Cpu, i: &Instr) -> Fault {
    let r = i.reg as usize;
    cpu.regs[r] = cpu.regs[r].swap_bytes();
    Ok(())
}

/// BSWAP r16 (undefined): hardware clears the low word (checked on an x86-64 host).
fn bswap16(cpu: &mut Cpu, i: &Instr) -> Fault {
    W16::set_reg(cpu, i.reg, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cpu::arith::tests::{exec, peek};
    use crate::cpu::flags::{CF, ZF};
    use crate::cpu::{EAX, EBX, ECX, EDX, ESI};

    #[test]
    fn bt_register_offset_is_taken_mod_width() {
        // bt ebx, eax (66 0F A3 C3) with EAX = 35: tests bit 3. bts bx, ax (0F AB C3): bit 3.
        let cpu = exec(&[0x66, 0x0F, 0xA3, 0xC3], |c| {
            c.regs[EBX] = 0x8;
            c.regs[EAX] = 35;
        });
        assert!(cpu.flags.cf());
        let cpu = exec(&[0x0F, 0xAB, 0xC3], |c| c.regs[EAX] = 0x13);
        assert_eq!(cpu.regs[EBX], 0x8);
        assert!(!cpu.flags.cf());
    }

    #[test]
    fn bt_memory_bit_string_is_signed() {
        // btc dword [0x200], eax (66 0F BB 06 00 02) with EAX = -1: bit 31 of the dword at 0x1FC.
        // bts word [0x200], ax (0F AB 06 00 02) with AX = 17: bit 1 of the word at 0x202.
        let mut cpu = exec(&[0x66, 0x0F, 0xBB, 0x06, 0x00, 0x02], |c| {
            c.regs[EAX] = 0xFFFF_FFFF;
            c.mem.load(0x1FC, &[0, 0, 0, 0x80]);
        });
        assert_eq!(peek(&mut cpu, 0x1FC, 4), 0);
        assert!(cpu.flags.cf());
        let mut cpu = exec(&[0x0F, 0xAB, 0x06, 0x00, 0x02], |c| c.regs[EAX] = 17);
        assert_eq!(peek(&mut cpu, 0x202, 2), 2);
        assert!(!cpu.flags.cf());
    }

    #[test]
    fn bt_immediate_masks_offset_and_keeps_zf() {
        // cmp eax, eax (66 39 C0) sets ZF; btr ebx, 33 (66 0F BA F3 21): bit 1.
        let cpu = exec(&[0x66, 0x39, 0xC0, 0x66, 0x0F, 0xBA, 0xF3, 0x21], |c| {
            c.regs[EBX] = 0xFF
        });
        assert_eq!(cpu.regs[EBX], 0xFD);
        assert_eq!(cpu.flags.word() & (CF | ZF), CF | ZF);
    }

    #[test]
    fn bsf_bsr() {
        // bsf eax, ebx (66 0F BC C3); bsr edx, ebx (66 0F BD D3)
        let cpu = exec(&[0x66, 0x0F, 0xBC, 0xC3, 0x66, 0x0F, 0xBD, 0xD3], |c| {
            c.regs[EBX] = 0x0010_0100
        });
        assert_eq!((cpu.regs[EAX], cpu.regs[EDX]), (8, 20));
        assert!(!cpu.flags.zf());
        // A zero source sets ZF and leaves the destination alone.
        let cpu = exec(&[0x66, 0x0F, 0xBC, 0xC3], |c| c.regs[EAX] = 0x1234_5678);
        assert_eq!(cpu.regs[EAX], 0x1234_5678);
        assert!(cpu.flags.zf());
    }

    #[test]
    fn cmpxchg_equal_and_not_equal() {
        // cmpxchg ebx, ecx (66 0F B1 CB)
        let cpu = exec(&[0x66, 0x0F, 0xB1, 0xCB], |c| {
            c.regs[EAX] = 5;
            c.regs[EBX] = 5;
            c.regs[ECX] = 9;
        });
        assert_eq!((cpu.regs[EAX], cpu.regs[EBX]), (5, 9));
        assert!(cpu.flags.zf());
        let cpu = exec(&[0x66, 0x0F, 0xB1, 0xCB], |c| {
            c.regs[EAX] = 4;
            c.regs[EBX] = 5;
            c.regs[ECX] = 9;
        });
        assert_eq!((cpu.regs[EAX], cpu.regs[EBX]), (5, 5));
        assert!(!cpu.flags.zf() && cpu.flags.cf());
    }

    #[test]
    fn xadd_exchanges_and_adds() {
        // lock xadd [0x300], cl (F0 0F C0 0E 00 03)
        let mut cpu = exec(&[0xF0, 0x0F, 0xC0, 0x0E, 0x00, 0x03], |c| {
            c.regs[ECX] = 0x01;
            c.mem.load(0x300, &[0xFF]);
        });
        assert_eq!(peek(&mut cpu, 0x300, 1), 0);
        assert_eq!(cpu.regs[ECX], 0xFF);
        assert!(cpu.flags.cf() && cpu.flags.zf());
    }

    #[test]
    fn cmpxchg8b() {
        // cmpxchg8b [si] (0F C7 0C), equal then not equal.
        let code = [0x0F, 0xC7, 0x0C, 0x0F, 0xC7, 0x0C];
        let mut cpu = exec(&code, |c| {
            c.regs[ESI] = 0x400;
            c.mem.load(0x400, &[1, 0, 0, 0, 2, 0, 0, 0]);
            c.regs[EAX] = 1;
            c.regs[EDX] = 2;
            c.regs[EBX] = 0xAAAA;
            c.regs[ECX] = 0xBBBB;
        });
        assert_eq!(peek(&mut cpu, 0x400, 4), 0xAAAA);
        assert_eq!(peek(&mut cpu, 0x404, 4), 0xBBBB);
        // The second one saw 0xBBBB:0xAAAA != 2:1, loaded it and cleared ZF.
        assert_eq!((cpu.regs[EDX], cpu.regs[EAX]), (0xBBBB, 0xAAAA));
        assert!(!cpu.flags.zf());
    }

    #[test]
    fn cmpxchg8b_register_form_is_ud() {
        // cmpxchg8b with mod = 3 (0F C7 C8): #UD through IVT entry 6.
        let cpu = exec(&[0x0F, 0xC7, 0xC8], |c| {
            c.mem.load(6 * 4, &[0x00, 0x20, 0x00, 0x00]);
            c.mem.load(0x2000, &[0xF4]);
        });
        assert_eq!(cpu.eip, 0x2001);
    }

    #[test]
    fn bswap() {
        // bswap ecx (66 0F C9)
        let cpu = exec(&[0x66, 0x0F, 0xC9], |c| c.regs[ECX] = 0x1122_3344);
        assert_eq!(cpu.regs[ECX], 0x4433_2211);
    }
}
