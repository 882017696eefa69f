//! The decoded-block cache: two-way set-associative on the physical address of a block's first
//! byte. Direct-mapped, two hot blocks whose addresses hash to the same slot evicted each other
//! at every turn of a loop that ran both (the birthday effect: a working set of a few thousand
//! blocks has dozens of such pairs in 16 Ki slots), and each eviction decoded a block again and
//! left its old instructions as garbage in the arena: a busy shell loop decoded 43 blocks per
//! turn and filled the arena every few hundred turns. With two ways a colliding pair shares a set.
//! The first way keeps the block that came first; a newcomer evicts the second (no recency to
//! update on the hot path), unless a way is empty, stale or holds the same address.
//!
//! A block is a run of decoded instructions from one 4 KiB page. It remembers the page's write
//! generation when it was decoded; a write to the page bumps the generation (see
//! [`crate::mem::Memory`]), so stale blocks are recognised on lookup without searching for them.
//! A block never runs into a second page, with one exception: an instruction that straddles a
//! page boundary is a block of its own, which also remembers the second page's physical address
//! and write generation, and is good only while the TLB maps the linear page after the first to
//! that physical page and nothing wrote it. (Decoded afresh at every execution, such blocks
//! were most of what a busy shell loop decoded: 4.7 per turn.) The compiling tier leaves them
//! to the interpreter: its regions check the pages where blocks start.
//!
//! The instructions of all blocks live in one arena ([`InstrArena`]), appended to as blocks are
//! decoded and cleared as a whole when it is full (with every block), the way QEMU manages its
//! translation buffer. The run loop takes the arena out of the CPU for the length of a
//! [`Cpu::run`](super::Cpu::run) call, so handlers (which get `&mut Cpu`) can run straight from
//! it without a copy or a move per block.

use super::decode::Instr;
use super::exception::Fault;
use super::Cpu;

/// Tag of an empty cache slot.
pub const NO_BLOCK: u32 = u32::MAX;
/// Most instructions in one block.
const MAX_BLOCK_INSTRS: usize = 64;
const CACHE_BITS: u32 = 16;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;
/// Instructions the arena holds before it is cleared (about 5 MB).
const ARENA_CAPACITY: usize = 1 << 17;

/// The decoded instructions of every cached block.
pub type InstrArena = Vec<Instr>;

/// One decoded block: what the run loop reads to find and start it, in 16 bytes, so that both
/// ways of a set share 32 bytes of one cache line and the whole table (1 MiB) fits the host's
/// L2 cache far better. The cache is far larger than the host's L1, and the lookup of the next
/// block was the costliest load of the run loop on kernel-heavy work (a fork/exec loop): with
/// 48-byte blocks a set spanned two or three lines. What only a block across two pages needs
/// is kept aside ([`ICache::second_pages`]).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct Block {
    /// Physical address of the first byte (NO_BLOCK if empty).
    pub phys: u32,
    /// Write generation of the page when decoded.
    pub gen: u32,
    /// Where the block's instructions start in the arena.
    pub start: u32,
    /// Bytes covered, for the CS limit check (at most a page).
    pub byte_len: u16,
    /// How many instructions it has (at most MAX_BLOCK_INSTRS).
    pub len: u8,
    /// BIG, FAST_ONLY, STRADDLES.
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Block>() == 16);

/// [`Block`] flags. The decoding mode the block was decoded in (CS.D): its key in the cache.
const BIG: u8 = 1;
/// Every instruction is a fast form (none goes through the handler pointer), so the run loop
/// may repeat the block when it loops to itself (see fast::run_repeating).
const FAST_ONLY: u8 = 2;
/// A single instruction that straddles into a second page (see the module comment).
const STRADDLES: u8 = 4;

impl Block {
    /// A block decoded at `phys` in mode `big` (CS.D) from the page at write generation `gen`.
    pub(crate) fn new(phys: u32, big: bool, gen: u32, decoded: &Decoded) -> Block {
        let mut flags = u8::from(big) * BIG;
        if decoded.fast_only {
            flags |= FAST_ONLY;
        }
        if decoded.next_page != NO_BLOCK {
            flags |= STRADDLES;
        }
        Block {
            phys,
            gen,
            start: decoded.start as u32,
            byte_len: decoded.byte_len,
            len: decoded.len as u8,
            flags,
        }
    }

    /// The decoding mode it is for (CS.D), as [`key`] gives it.
    #[inline(always)]
    pub fn key(&self) -> u8 {
        self.flags & BIG
    }

    /// Every instruction is a fast form.
    #[inline(always)]
    pub fn fast_only(&self) -> bool {
        self.flags & FAST_ONLY != 0
    }

    /// It straddles into a second page ([`ICache::second_pages`] says which).
    #[inline(always)]
    pub fn straddles(&self) -> bool {
        self.flags & STRADDLES != 0
    }
}

/// The cache key of code segment `cs`: its decoding mode (CS.D).
#[inline(always)]
pub fn key(big: bool) -> u8 {
    u8::from(big) * BIG
}

impl Default for Block {
    fn default() -> Self {
        Block {
            phys: NO_BLOCK,
            gen: 0,
            start: 0,
            byte_len: 0,
            len: 0,
            flags: 0,
        }
    }
}

/// For a block that straddles into a second page: that page's physical page number and its
/// write generation when the block was decoded.
#[derive(Clone, Copy, Default)]
pub struct SecondPage {
    pub page: u32,
    pub gen: u32,
}

/// The two ways of one set, in one aligned half of a cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Set([Block; 2]);

const SETS: usize = CACHE_SLOTS / 2;
const _: () = assert!(std::mem::size_of::<Set>() == 32 && SETS * 2 == CACHE_SLOTS);

/// Every block slot, indexed by slot number ([`ICache::index`] and the slot after it).
pub struct BlockTable(Box<[Set; SETS]>);

impl BlockTable {
    /// The slots as one array of blocks.
    #[inline(always)]
    fn slots(&self) -> &[Block; CACHE_SLOTS] {
        // SAFETY: `Set` is `repr(C)` around `[Block; 2]`, 32 bytes (two 16-byte blocks, the
        // asserts above) with alignment 32, so the sets leave no gap and their storage is
        // exactly CACHE_SLOTS consecutive blocks (SETS * 2 == CACHE_SLOTS), aligned for
        // `Block` (16 divides 32). The reference borrows `self`, so the table outlives it and
        // nothing writes it meanwhile.
        unsafe { &*self.0.as_ptr().cast::<[Block; CACHE_SLOTS]>() }
    }

    /// [`slots`](Self::slots), writable.
    #[inline(always)]
    fn slots_mut(&mut self) -> &mut [Block; CACHE_SLOTS] {
        // SAFETY: as in `slots`; the reference borrows `self` mutably, so it is the only one.
        unsafe { &mut *self.0.as_mut_ptr().cast::<[Block; CACHE_SLOTS]>() }
    }
}

impl std::ops::Index<usize> for BlockTable {
    type Output = Block;
    #[inline(always)]
    fn index(&self, slot: usize) -> &Block {
        &self.slots()[slot]
    }
}

impl std::ops::IndexMut<usize> for BlockTable {
    #[inline(always)]
    fn index_mut(&mut self, slot: usize) -> &mut Block {
        &mut self.slots_mut()[slot]
    }
}

/// What the compiling tier keeps for a block slot, apart from the block, since the interpreter
/// never reads it (see crate::jit).
#[derive(Clone, Copy, Default)]
pub struct CompiledLink {
    /// Times the block started while the compiling tier was on and it had no compiled code.
    pub hits: u32,
    /// The compiled region that runs it (0: none) and its entry there.
    pub region: u32,
    pub entry: u32,
}

/// The cache itself.
pub struct ICache {
    /// Fixed-size, so the hashed index needs no bounds check.
    pub blocks: BlockTable,
    /// The compiling tier's link for each slot; reset whenever its slot gets a new block.
    pub compiled: Box<[CompiledLink; CACHE_SLOTS]>,
    /// For each slot whose block straddles into a second page: that page.
    pub second_pages: Box<[SecondPage; CACHE_SLOTS]>,
    /// The instruction arena while no `run` is in progress.
    pub(crate) arena: InstrArena,
}

impl ICache {
    pub fn new() -> ICache {
        ICache {
            blocks: BlockTable(crate::mem::boxed_table(Set::default())),
            compiled: crate::mem::boxed_table(CompiledLink::default()),
            second_pages: crate::mem::boxed_table(SecondPage::default()),
            arena: Vec::with_capacity(ARENA_CAPACITY),
        }
    }

    /// The first of the two slots (ways) a block starting at `phys` may be in; the other is
    /// the next one.
    #[inline(always)]
    pub fn index(&self, phys: u32) -> usize {
        (phys.wrapping_mul(0x9E37_79B1) >> (32 - CACHE_BITS)) as usize & !1
    }

    /// Put a newly decoded block into `slot` (with the second page it straddles into, if it
    /// does); the slot's compiling-tier link starts afresh.
    pub fn insert(&mut self, slot: usize, block: Block, second: SecondPage) {
        self.blocks[slot] = block;
        self.second_pages[slot] = second;
        self.compiled[slot] = CompiledLink::default();
    }

    /// Forget every block (A20 change, reset). The arena's instructions become garbage and are
    /// dropped when it fills up.
    pub fn flush(&mut self) {
        for b in self.blocks.slots_mut().iter_mut() {
            b.phys = NO_BLOCK;
        }
    }
}

impl Default for ICache {
    fn default() -> Self {
        ICache::new()
    }
}

/// The outcome of decoding a block.
pub(crate) struct Decoded {
    /// Where its instructions start in the arena.
    pub start: usize,
    /// How many there are.
    pub len: usize,
    /// Bytes covered (at most a page).
    pub byte_len: u16,
    /// Every instruction is a fast form.
    pub fast_only: bool,
    /// It must not be cached: a single instruction that straddles into a next page the TLB
    /// does not hold. Its instructions are dropped from the arena after it ran.
    pub uncacheable: bool,
    /// For a single instruction that straddles into the next page: that page's physical
    /// page number (NO_BLOCK otherwise).
    pub next_page: u32,
}

impl Cpu {
    /// Decode the block at CS:EIP (physical `phys`) onto the end of `arena`. A fault on the
    /// first instruction is returned; a fault later just ends the block before that instruction.
    pub(crate) fn decode_block(&mut self, arena: &mut InstrArena, phys: u32) -> Fault<Decoded> {
        if arena.len() + MAX_BLOCK_INSTRS > ARENA_CAPACITY {
            // Full: start again, forgetting every block (their instructions are gone).
            arena.clear();
            self.icache.flush();
            self.counters.block_cache_clears += 1;
        }
        self.counters.blocks_decoded += 1;
        let start = arena.len();
        let page = (phys >> 12) as usize;
        self.mem.mark_code_page(page);
        let page_left = 0x1000 - (phys & 0xFFF);
        let mut off = 0u32;
        let mut uncacheable = false;
        let mut next_page = NO_BLOCK;
        while arena.len() - start < MAX_BLOCK_INSTRS {
            let eip = self.eip.wrapping_add(off);
            let (instr, ends) = match self.decode_one(eip) {
                Ok(x) => x,
                Err(e) if arena.len() == start => return Err(e),
                Err(_) => break,
            };
            let len = instr.len as u32;
            if off + len > page_left {
                // Straddles into the next page: a block of its own, which depends on both pages
                // (see the module comment). The fetch of its bytes has just filled the TLB for
                // the second page, unless that page is one the TLB does not hold.
                if arena.len() == start {
                    arena.push(Instr {
                        end: len as u16,
                        ..instr
                    });
                    off += len;
                    self.counters.blocks_straddling += 1;
                    let cs = &self.segs[super::Segment::CS as usize];
                    let second = cs.base.wrapping_add(self.eip).wrapping_add(page_left);
                    match self.mem.tlb.lookup(second, self.tlb_read_perm) {
                        Some(p) => {
                            next_page = p >> 12;
                            self.mem.mark_code_page(next_page as usize);
                        }
                        None => uncacheable = true,
                    }
                }
                break;
            }
            off += len;
            arena.push(Instr {
                end: off as u16,
                ..instr
            });
            // A compare followed by a conditional jump becomes one fused instruction, and a
            // CDQ followed by an IDIV one folded instruction; then a register move before it
            // is folded in.
            let n = arena.len();
            if n - start >= 2 {
                let (first, second) = (&arena[n - 2], &arena[n - 1]);
                let pair = super::fast::fuse(first, second)
                    .or_else(|| super::fast::fold_cdq(first, second));
                if let Some(pair) = pair {
                    arena.truncate(n - 1);
                    arena[n - 2] = pair;
                }
            }
            let n = arena.len();
            if n - start >= 2 {
                if let Some(folded) = super::fast::fold_move(&arena[n - 2], &arena[n - 1]) {
                    arena.truncate(n - 1);
                    arena[n - 2] = folded;
                }
            }
            if ends || off == page_left {
                break;
            }
        }
        super::fast::drop_dead_flags(&mut arena[start..]);
        Ok(Decoded {
            start,
            len: arena.len() - start,
            byte_len: off as u16,
            fast_only: arena[start..].iter().all(|i| i.fast != super::fast::NONE),
            uncacheable,
            next_page,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_ways_of_a_set_share_half_a_cache_line() {
        let cache = ICache::new();
        for phys in [0u32, 0x1000, 0x0012_3456, 0xFFFF_FFF0] {
            let first = cache.index(phys);
            assert_eq!(first % 2, 0);
            let a = std::ptr::from_ref(&cache.blocks[first]) as usize;
            let b = std::ptr::from_ref(&cache.blocks[first + 1]) as usize;
            assert_eq!(
                a % 32,
                0,
                "set of {phys:#x} starts an aligned half of a cache line"
            );
            assert_eq!(b, a + 16, "its second way is the other half of that half");
        }
        let last = std::ptr::from_ref(&cache.blocks[CACHE_SLOTS - 1]) as usize;
        let first = std::ptr::from_ref(&cache.blocks[0]) as usize;
        assert_eq!(
            last - first,
            (CACHE_SLOTS - 1) * 16,
            "slots are consecutive"
        );
    }

    #[test]
    fn a_new_block_in_a_slot_starts_with_no_compiled_link() {
        let mut cache = ICache::new();
        cache.compiled[7] = CompiledLink {
            hits: 3,
            region: 9,
            entry: 2,
        };
        let second = SecondPage { page: 3, gen: 4 };
        cache.insert(
            7,
            Block {
                phys: 0x2000,
                ..Block::default()
            },
            second,
        );
        assert_eq!(cache.second_pages[7].page, 3);
        assert_eq!(cache.blocks[7].phys, 0x2000);
        let link = cache.compiled[7];
        assert_eq!((link.hits, link.region, link.entry), (0, 0, 0));
        cache.flush();
        assert_eq!(cache.blocks[7].phys, NO_BLOCK);
    }
}
