//! The decoded-block cache: direct-mapped on the physical address of a block's first byte.
//!
//! A block is a run of decoded instructions from one 4 KiB page. It remembers the page's write
//! generation when it was decoded; a write to the page bumps the generation (see
//! [`crate::mem::Memory`]), so stale blocks are recognised on lookup without searching for them.
//! Instructions that straddle a page boundary are decoded fresh each time (uncacheable) so a
//! block never depends on a second page.

use super::decode::Instr;
use super::exception::Fault;
use super::Cpu;

/// Tag of an empty cache slot.
pub const NO_BLOCK: u32 = u32::MAX;
/// Most instructions in one block.
const MAX_BLOCK_INSTRS: usize = 64;
const CACHE_BITS: u32 = 14;

/// One decoded block.
#[derive(Clone)]
pub struct Block {
    /// Physical address of the first byte (NO_BLOCK if empty).
    pub phys: u32,
    /// Decoding mode the block was decoded in (CS.D).
    pub key: u32,
    /// Write generation of the page when decoded.
    pub gen: u32,
    /// Bytes covered, for the CS limit check.
    pub byte_len: u32,
    /// Must not be reused (it ends in a fault or straddles a page).
    pub uncacheable: bool,
    pub instrs: Vec<Instr>,
}

impl Default for Block {
    fn default() -> Self {
        Block {
            phys: NO_BLOCK,
            key: 0,
            gen: 0,
            byte_len: 0,
            uncacheable: false,
            instrs: Vec::new(),
        }
    }
}

/// The cache itself.
pub struct ICache {
    pub blocks: Vec<Block>,
}

impl ICache {
    pub fn new() -> ICache {
        ICache {
            blocks: vec![Block::default(); 1 << CACHE_BITS],
        }
    }

    /// Slot for the block starting at `phys`.
    #[inline(always)]
    pub fn index(&self, phys: u32) -> usize {
        (phys.wrapping_mul(0x9E37_79B1) >> (32 - CACHE_BITS)) as usize
    }

    /// Forget every block (A20 change, reset).
    pub fn flush(&mut self) {
        for b in self.blocks.iter_mut() {
            b.phys = NO_BLOCK;
        }
    }
}

impl Default for ICache {
    fn default() -> Self {
        ICache::new()
    }
}

impl Cpu {
    /// Decode the block at CS:EIP (physical `phys`) into `block`. A fault on the first
    /// instruction is returned; a fault later just ends the block before that instruction.
    pub(crate) fn decode_block(&mut self, block: &mut Block, phys: u32, key: u32) -> Fault {
        block.instrs.clear();
        block.phys = phys;
        block.key = key;
        block.uncacheable = false;
        let page = (phys >> 12) as usize;
        self.mem.mark_code_page(page);
        block.gen = self.mem.page_generation(page);
        let page_left = 0x1000 - (phys & 0xFFF);
        let mut off = 0u32;
        while block.instrs.len() < MAX_BLOCK_INSTRS {
            let eip = self.eip.wrapping_add(off);
            let (instr, ends) = match self.decode_one(eip) {
                Ok(x) => x,
                Err(e) if block.instrs.is_empty() => {
                    block.phys = NO_BLOCK;
                    return Err(e);
                }
                Err(_) => break,
            };
            let len = instr.len as u32;
            if off + len > page_left {
                // Straddles into the next page: run it alone, never cache it.
                if block.instrs.is_empty() {
                    block.instrs.push(instr);
                    off += len;
                    block.uncacheable = true;
                }
                break;
            }
            block.instrs.push(instr);
            off += len;
            if ends || off == page_left {
                break;
            }
        }
        block.byte_len = off;
        Ok(())
    }
}
