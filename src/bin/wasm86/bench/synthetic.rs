//! `wasm86 bench --synthetic`: the CPU micro benchmark. A guest in 32-bit protected mode with
//! paging on (flat segments, every page identity-mapped through 4 KiB page tables) counts the
//! primes below N by trial division and stores each prime in a table, N times `--iterations`.
//! The host checks the count, the table and the exact number of retired instructions against its
//! own computation, then prints `instructions=N wall_ms=N mips=X primes=N`.
//!
//! The machine state is built directly (GDT, page tables and registers), not booted through
//! real-mode code, so the benchmark measures only the loop.

use std::time::Instant;
use wasm86::cpu::protected::Descriptor;
use wasm86::cpu::{Cpu, RunExit, Segment, TableReg, CR0_ET, CR0_PE, CR0_PG};
use wasm86::cpu::{EBP, ESI, ESP};

/// Options of `wasm86 bench`.
pub struct BenchOptions {
    /// Count primes below this.
    pub limit: u32,
    /// Run the count this many times.
    pub iterations: u32,
}

/// Defaults: about 2.2 billion guest instructions (about 6 s at 370 MIPS).
pub const DEFAULT_LIMIT: u32 = 1_000_000;
pub const DEFAULT_ITERATIONS: u32 = 3;
/// Largest accepted limit (the guest would run for minutes beyond it).
pub const MAX_LIMIT: u32 = 10_000_000;

/// Guest physical (= linear) layout.
const GDT: u32 = 0x1000;
const PAGE_DIR: u32 = 0x2000;
const PAGE_TABLES: u32 = 0x3000;
const STACK_TOP: u32 = 0x7F000;
const CODE: u32 = 0x80000;
/// Where the guest stores the primes it finds (the constant in the store instruction below).
const TABLE: u32 = 0x100000;

/// The guest program, hand-assembled; the source (NASM syntax, `bits 32`) is the comments.
/// In: ESI = limit, EBP = iterations. Out: EBX = primes found by the last iteration.
/// `nasm_agrees_with_the_hand_assembly` checks these bytes against nasm when it is installed.
#[rustfmt::skip]
const PROGRAM: [u8; 53] = [
    // start:
    0x31, 0xDB,                         // 00 xor ebx, ebx          ; count = 0
    0xB9, 0x02, 0x00, 0x00, 0x00,       // 02 mov ecx, 2            ; n = 2
    // outer:
    0x39, 0xF1,                         // 07 cmp ecx, esi
    0x73, 0x26,                         // 09 jae done
    0xBF, 0x02, 0x00, 0x00, 0x00,       // 0B mov edi, 2            ; d = 2
    // inner:
    0x89, 0xF8,                         // 10 mov eax, edi
    0x0F, 0xAF, 0xC7,                   // 12 imul eax, edi         ; d*d
    0x39, 0xC8,                         // 15 cmp eax, ecx
    0x77, 0x0D,                         // 17 ja prime              ; d*d > n: n is prime
    0x89, 0xC8,                         // 19 mov eax, ecx
    0x31, 0xD2,                         // 1B xor edx, edx
    0xF7, 0xF7,                         // 1D div edi
    0x85, 0xD2,                         // 1F test edx, edx
    0x74, 0x0B,                         // 21 jz next               ; d divides n
    0x47,                               // 23 inc edi
    0xEB, 0xEA,                         // 24 jmp inner
    // prime:
    0x89, 0x0C, 0x9D, 0x00, 0x00, 0x10, 0x00, // 26 mov [ebx*4 + 0x100000], ecx
    0x43,                               // 2D inc ebx
    // next:
    0x41,                               // 2E inc ecx
    0xEB, 0xD6,                         // 2F jmp outer
    // done:
    0x4D,                               // 31 dec ebp
    0x75, 0xCC,                         // 32 jnz start
    0xF4,                               // 34 hlt
];

/// What the guest must produce: the primes below the limit and the exact instruction count.
struct Expected {
    primes: Vec<u32>,
    instructions: u64,
}

/// Compute on the host what the guest program does, counting its instructions per path.
/// The smallest divisor the guest finds is the smallest prime factor, so trial division by the
/// primes up to sqrt(n) gives the same loop counts.
fn expected(limit: u32, iterations: u32) -> Expected {
    let mut primes: Vec<u32> = Vec::new();
    // Instructions of one iteration: xor, mov; final cmp, jae; dec, jnz.
    let mut per_iteration: u64 = 2 + 2 + 2;
    for n in 2..limit {
        // cmp, jae, mov edi.
        per_iteration += 3;
        let factor = primes
            .iter()
            .take_while(|&&p| (p as u64) * (p as u64) <= n as u64)
            .find(|&&p| n % p == 0);
        match factor {
            Some(&d) => {
                // d - 2 full trips (11 instructions), the dividing trip up to jz (9), inc, jmp.
                per_iteration += (d as u64 - 2) * 11 + 9 + 2;
            }
            None => {
                // Full trips for d = 2..=isqrt(n), then mov, imul, cmp, ja; store, inc, inc, jmp.
                let r = (n as f64).sqrt() as u64;
                let r = if (r + 1) * (r + 1) <= n as u64 {
                    r + 1
                } else if r * r > n as u64 {
                    r - 1
                } else {
                    r
                };
                per_iteration += r.saturating_sub(1) * 11 + 4 + 4;
                primes.push(n);
            }
        }
    }
    Expected {
        primes,
        // Plus the final HLT.
        instructions: per_iteration * iterations as u64 + 1,
    }
}

/// A flat 4 GiB descriptor: code (execute/read) or data (read/write), DPL 0, 32-bit, G = 1.
fn flat_descriptor(code: bool) -> Descriptor {
    let access: u32 = if code { 0x9A } else { 0x92 };
    Descriptor {
        lo: 0x0000_FFFF,
        hi: 0x00CF_0000 | access << 8,
    }
}

/// Build the machine: RAM for the code and the table, GDT, identity page tables, registers.
fn build_guest(opts: &BenchOptions, prime_count: usize) -> Cpu {
    const MIB4: u32 = 4 << 20;
    let needed = TABLE + (prime_count as u32 + 1) * 4;
    let ram = needed.div_ceil(MIB4) * MIB4;
    let mut cpu = Cpu::with_ram(ram as usize);

    let code = flat_descriptor(true);
    let data = flat_descriptor(false);
    for (i, d) in [Descriptor::default(), code, data].iter().enumerate() {
        let at = GDT + 8 * i as u32;
        cpu.mem.load(at, &d.lo.to_le_bytes());
        cpu.mem.load(at + 4, &d.hi.to_le_bytes());
    }
    cpu.gdtr = TableReg {
        base: GDT,
        limit: 3 * 8 - 1,
    };

    // Page directory entries point at consecutive page tables; every PTE maps its own address.
    const PRESENT_WRITABLE: u32 = 0x3;
    let pages = ram / 4096;
    for t in 0..pages.div_ceil(1024) {
        let table = PAGE_TABLES + t * 4096;
        cpu.mem
            .load(PAGE_DIR + 4 * t, &(table | PRESENT_WRITABLE).to_le_bytes());
    }
    for page in 0..pages {
        let pte = (page << 12) | PRESENT_WRITABLE;
        cpu.mem.load(PAGE_TABLES + 4 * page, &pte.to_le_bytes());
    }

    cpu.mem.load(CODE, &PROGRAM);
    cpu.write_cr3(PAGE_DIR);
    cpu.write_cr0(CR0_PE | CR0_PG | CR0_ET)
        .expect("PE and PG together are a valid CR0");
    cpu.segs[Segment::CS as usize] = code.to_cache(0x08);
    for seg in [
        Segment::DS,
        Segment::ES,
        Segment::SS,
        Segment::FS,
        Segment::GS,
    ] {
        cpu.segs[seg as usize] = data.to_cache(0x10);
    }
    cpu.set_cpl(0);
    cpu.eip = CODE;
    cpu.regs[ESP] = STACK_TOP;
    cpu.regs[ESI] = opts.limit;
    cpu.regs[EBP] = opts.iterations;
    cpu
}

/// Run the benchmark; Err describes what went wrong (bad options or a wrong guest result).
pub fn run(opts: &BenchOptions) -> Result<(), String> {
    if opts.limit < 2 || opts.limit > MAX_LIMIT {
        return Err(format!("--limit must be between 2 and {MAX_LIMIT}"));
    }
    if opts.iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    let want = expected(opts.limit, opts.iterations);
    let mut cpu = build_guest(opts, want.primes.len());

    // Never run much past the expected count, so a broken CPU cannot hang the benchmark.
    let cap = want
        .instructions
        .saturating_mul(2)
        .saturating_add(1_000_000);
    let start = Instant::now();
    let exit = loop {
        match cpu.run(1 << 28) {
            RunExit::Budget if cpu.instructions < cap => continue,
            other => break other,
        }
    };
    let wall = start.elapsed();

    let count = cpu.regs[wasm86::cpu::EBX];
    let wall_ms = wall.as_millis();
    let mips = cpu.instructions as f64 / wall.as_secs_f64().max(1e-9) / 1e6;
    println!(
        "instructions={} wall_ms={} mips={:.1} primes={}",
        cpu.instructions, wall_ms, mips, count
    );

    if exit != RunExit::Halted {
        return Err(format!(
            "guest did not reach its HLT ({exit:?}) at EIP {:#x}",
            cpu.eip
        ));
    }
    if count as usize != want.primes.len() {
        return Err(format!(
            "wrong prime count: guest {count}, expected {}",
            want.primes.len()
        ));
    }
    for (i, &p) in want.primes.iter().enumerate() {
        let at = (TABLE as usize) + 4 * i;
        let got = u32::from_le_bytes([
            cpu.mem.ram[at],
            cpu.mem.ram[at + 1],
            cpu.mem.ram[at + 2],
            cpu.mem.ram[at + 3],
        ]);
        if got != p {
            return Err(format!("prime table entry {i}: guest {got}, expected {p}"));
        }
    }
    if cpu.instructions != want.instructions {
        return Err(format!(
            "retired {} instructions, the program takes exactly {}",
            cpu.instructions, want.instructions
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_model_counts_primes_and_instructions() {
        // Reference values computed independently (a sieve and a per-path count).
        let e = expected(100_000, 1);
        assert_eq!(e.primes.len(), 9592);
        assert_eq!(e.instructions, 30_579_360);
        assert_eq!(expected(1_000_000, 1).primes.len(), 78_498);
        assert_eq!(expected(1_000_000, 1).instructions, 748_772_418);
    }

    /// The hand-assembled bytes match nasm's output for the source in the comments (skipped
    /// when nasm is not installed).
    #[test]
    fn nasm_agrees_with_the_hand_assembly() {
        let source = include_str!("synthetic.rs");
        let body: String = source
            .lines()
            .skip_while(|l| !l.starts_with("const PROGRAM"))
            .skip(1)
            .take_while(|l| !l.starts_with("];"))
            .filter_map(|l| l.split_once("// ").map(|(_, c)| c))
            .map(|c| match c.split_once(' ') {
                // "00 xor ebx, ebx ; comment": drop the offset; labels ("start:") stay.
                Some((off, rest)) if u32::from_str_radix(off, 16).is_ok() => {
                    format!("    {rest}\n")
                }
                _ => format!("{c}\n"),
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("wasm86-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let asm = dir.join("prime.asm");
        let bin = dir.join("prime.bin");
        std::fs::write(&asm, format!("bits 32\n{body}")).unwrap();
        let status = std::process::Command::new("nasm")
            .arg("-f")
            .arg("bin")
            .arg(&asm)
            .arg("-o")
            .arg(&bin)
            .status();
        match status {
            Ok(s) if s.success() => {
                assert_eq!(std::fs::read(&bin).unwrap(), PROGRAM.to_vec());
            }
            Ok(s) => panic!("nasm failed ({s}) on:\n{body}"),
            Err(_) => eprintln!("nasm not installed: hand assembly not cross-checked"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
