//! Random differential tests of the compiling tier: random guest programs
//! (`wasm86::jit::random_program`) run with the interpreter alone and with the tier on (the wasmi
//! engine), in slices, and every slice must end in the same machine state. Two environments:
//! flat real mode (`sample::cpu_running`) and paged protected mode at CPL 3; some programs end
//! in a fault in the middle of the compiled loop (#DE, #PF, #GP).
//!
//! `JIT_RANDOM_SEEDS=N` runs N seeds per mode instead of the default (`JIT_RANDOM_FIRST=K`
//! starts at seed K), for a longer hunt. A failure prints the seed, the slice, the program as
//! hex (code at 0x1000; `objdump -D -b binary -mi386 -M intel --adjust-vma=0x1000`) and the
//! same program cut down to the fewest random instructions that still differ
//! (`random_program::program_without(seed, mode, &dropped)` rebuilds it).
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeSet, HashMap};

use wasm86::cpu::Cpu;
use wasm86::jit::random_program::{self, Mode, Planned, Program};
use wasm86::jit::sample;
use wasm86::jit::wasmi_engine::WasmiEngine;

/// Seeds per mode by default: about 20-30 s per mode under `cargo test --release` (the two
/// modes run in parallel).
const DEFAULT_SEEDS: u64 = 600;

/// Seeds that found tier bugs (cut down to the programs of the tests at the end):
/// always run first, in both modes.
const FOUND: &[u64] = &[44, 94, 137, 153, 158, 284, 408];

fn seeds() -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let n = var("JIT_RANDOM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = var("JIT_RANDOM_FIRST").unwrap_or(0);
    let mut seeds: Vec<u64> = FOUND.to_vec();
    seeds.extend((first..first + n).filter(|s| !FOUND.contains(s)));
    seeds
}

/// Slices and thresholds each program runs with: large slices (compiled code runs whole
/// passes of the loop), a small odd slice (compiled code is entered and left at every slice
/// boundary, and the interpreter runs the blocks that do not fit), and threshold 3 (regions are
/// compiled once the loop's blocks are all decoded, so the loop runs inside one region).
fn configs(seed: u64) -> [(u64, u32); 3] {
    let small = if seed.is_multiple_of(2) { 37 } else { 7 };
    [(100_000, 1), (small, 1), (1001, 3)]
}

fn engine() -> Box<WasmiEngine> {
    Box::new(WasmiEngine::new())
}

/// Whether `cpu`, having run `p`, ended as the program planned.
fn as_planned(p: &Program, cpu: &Cpu) -> bool {
    use random_program::Outcome::{Exception, Exit};
    let passes = random_program::passes(p, cpu);
    let walk = u32::from_le_bytes(
        cpu.mem.ram[random_program::WALK as usize..][..4]
            .try_into()
            .unwrap(),
    );
    let on_fault_page = cpu.cr2 >> 12 == random_program::FAULT_PAGE >> 12;
    // A planned fault happens after some passes of the loop, not in the first.
    let late = passes >= 1 && passes < p.iterations;
    match (p.planned, random_program::outcome(p, cpu)) {
        (Planned::Exit, Exit) => passes == p.iterations,
        (Planned::BeyondRam, Exit) => passes == p.iterations && walk > 0x10_0000,
        (Planned::DivideByZero, Exception { vector: 0, .. }) => late,
        // Error code bits: P (present), W (write), U (user).
        (
            Planned::PageNotPresent,
            Exception {
                vector: 14,
                error: Some(e),
            },
        ) => late && on_fault_page && e & 5 == 4,
        (
            Planned::PageSupervisor,
            Exception {
                vector: 14,
                error: Some(e),
            },
        ) => late && on_fault_page && e & 5 == 5,
        (
            Planned::PageReadOnly,
            Exception {
                vector: 14,
                error: Some(e),
            },
        ) => late && on_fault_page && e & 7 == 7,
        (
            Planned::SegmentLimit,
            Exception {
                vector: 13,
                error: Some(0),
            },
        ) => late,
        _ => false,
    }
}

/// The kinds of ending each mode's programs plan.
fn kinds(mode: Mode) -> &'static [Planned] {
    match mode {
        Mode::Flat => &[Planned::Exit, Planned::DivideByZero, Planned::BeyondRam],
        Mode::Paged => &[
            Planned::Exit,
            Planned::DivideByZero,
            Planned::PageNotPresent,
            Planned::PageSupervisor,
            Planned::PageReadOnly,
            Planned::SegmentLimit,
        ],
    }
}

/// Run `p` with both tiers at `slice` and `threshold`: the compiled CPU or what differed.
fn differential(p: &Program, slice: u64, threshold: u32) -> Result<Cpu, String> {
    let cpu = random_program::same_with_and_without(p, slice, engine(), threshold)?;
    if p.mode == Mode::Flat && slice == 100_000 {
        // The shared harness too, on the same image (its environment sends only #DE to a HLT;
        // what a flat program plans needs no other vector).
        sample::same_with_and_without(&p.image(), slice, engine(), threshold)
            .map_err(|e| format!("sample::same_with_and_without: {e}"))?;
    }
    Ok(cpu)
}

/// A failure's report: seed, slice, the difference, the program, and the program cut down.
fn report(p: &Program, slice: u64, threshold: u32, error: &str, cut_down: bool) -> String {
    let mut s = format!(
        "seed {} {:?} (planned {:?}), slice {slice}, threshold {threshold}: {error}\n\
         program ({} bytes at 0x1000):\n{}\n",
        p.seed,
        p.mode,
        p.planned,
        p.code.len(),
        p.hex()
    );
    if cut_down {
        let fails = |q: &Program| differential(q, slice, threshold).is_err();
        let (small, dropped) = random_program::minimise(p.seed, p.mode, fails);
        let kept: Vec<usize> = (0..small.units).filter(|u| !dropped.contains(u)).collect();
        let e = differential(&small, slice, threshold)
            .err()
            .unwrap_or_default();
        s += &format!(
            "cut down to units {kept:?} of {} (rebuild with program_without(seed, mode, \
             all the other units)): {e}\n{}\n",
            small.units,
            small.hex()
        );
    }
    s
}

/// Every seed in `mode`, in every configuration: both tiers must agree; most instructions
/// must have run compiled, and every planned kind of ending must have happened.
fn run_mode(mode: Mode) {
    let (mut compiled, mut total) = (0u64, 0u64);
    let mut endings: HashMap<Planned, (u32, u32)> = HashMap::new();
    let mut failures = Vec::new();
    let seeds = seeds();
    for &seed in &seeds {
        let p = random_program::program(seed, mode);
        for (slice, threshold) in configs(seed) {
            match differential(&p, slice, threshold) {
                Ok(cpu) => {
                    if slice == 100_000 {
                        compiled += cpu.jit_stats().compiled_instructions;
                        total += cpu.instructions;
                        let e = endings.entry(p.planned).or_default();
                        e.0 += 1;
                        e.1 += as_planned(&p, &cpu) as u32;
                    }
                }
                Err(e) => {
                    // Cut down only the first failure (it takes a few hundred runs).
                    let r = report(&p, slice, threshold, &e, failures.is_empty());
                    eprintln!("{r}");
                    failures.push(format!("seed {seed} slice {slice} threshold {threshold}"));
                    break;
                }
            }
        }
    }
    eprintln!(
        "{mode:?}: {} programs, {compiled} of {total} instructions compiled at slice 100000; \
         endings (planned: programs, as planned) {endings:?}",
        seeds.len()
    );
    assert!(
        failures.is_empty(),
        "{mode:?}: the tier differs from the interpreter in {} runs (reports above): {failures:?}",
        failures.len()
    );
    assert!(
        compiled * 10 > total * 9,
        "{mode:?}: only {compiled} of {total} instructions ran compiled"
    );
    for kind in kinds(mode) {
        let (_, good) = endings.get(kind).copied().unwrap_or_default();
        assert!(
            good >= 3 || seeds.len() < 100,
            "{mode:?}: only {good} programs ended as {kind:?} planned: {endings:?}"
        );
    }
}

#[test]
fn random_flat_programs_run_the_same_compiled() {
    run_mode(Mode::Flat);
}

#[test]
fn random_paged_programs_run_the_same_compiled() {
    run_mode(Mode::Paged);
}

/// The generator's programs do what they plan under the interpreter alone: they exit after
/// their last pass, or fault as planned after some passes (a program that faulted at once
/// would test little). A few may end otherwise (an IDIV of the most negative value by -1, a
/// string compare that stops early and so reaches the fault page later), never many.
#[test]
fn random_programs_end_as_planned_under_the_interpreter() {
    for mode in [Mode::Flat, Mode::Paged] {
        let mut by_kind: HashMap<Planned, (u32, u32)> = HashMap::new();
        let n = 2000;
        for seed in 0..n {
            let p = random_program::program(seed, mode);
            assert!(p.code.len() < 0x7000 - 0x1000, "seed {seed}: code too long");
            let cpu = random_program::run_plain(&p, 50_000_000);
            assert!(cpu.halted, "seed {seed} {mode:?} never halted");
            let e = by_kind.entry(p.planned).or_default();
            e.0 += 1;
            e.1 += as_planned(&p, &cpu) as u32;
        }
        let (all, good) = by_kind
            .values()
            .fold((0, 0), |(a, g), (n, k)| (a + n, g + k));
        assert!(
            good * 100 >= all * 97,
            "{mode:?}: only {good} of {all} ended as planned: {by_kind:?}"
        );
        for kind in kinds(mode) {
            let (n, k) = by_kind.get(kind).copied().unwrap_or_default();
            assert!(
                n >= 50 && k * 10 >= n * 9,
                "{mode:?} {kind:?}: {k} of {n} as planned"
            );
        }
    }
}

/// A program cut down by `program_without` is the same program without those units.
#[test]
fn dropping_units_leaves_the_rest_of_the_program() {
    let p = random_program::program(7, Mode::Flat);
    let all: BTreeSet<usize> = (0..p.units).collect();
    let none = random_program::program_without(7, Mode::Flat, &all);
    assert!(none.code.len() < p.code.len());
    assert_eq!(
        random_program::program_without(7, Mode::Flat, &BTreeSet::new()).code,
        p.code
    );
    // Prologue, counters and loop without a random instruction: it still ends cleanly.
    let cpu = random_program::run_plain(&none, 10_000_000);
    assert!(
        matches!(
            random_program::outcome(&none, &cpu),
            random_program::Outcome::Exit | random_program::Outcome::Exception { .. }
        ),
        "{:?}",
        random_program::outcome(&none, &cpu)
    );
}

// ---- Tier bugs found (by the random programs and by booting), cut down by hand ----

/// Run `code` (flat, at 0x1000) with both tiers in every configuration; the failures.
fn failures(code: &[u8]) -> Vec<String> {
    [(100_000, 1), (100_000, 2), (37, 1), (7, 1)]
        .into_iter()
        .filter_map(|(slice, threshold)| {
            sample::same_with_and_without(code, slice, engine(), threshold).err()
        })
        .collect()
}

/// Seeds 44, 94, 137, 153, 158: a CMOVcc whose condition is false must leave its destination
/// as it is, also when the instruction before it (run through `step`) just wrote it.
///
/// ```text
///   mov esi,16 ; mov eax,-1 ; mov edx,0x5753358e ; mov ebp,0xb6d768bb
/// top:
///   shld edx,ebp,5      ; through step: writes EDX
///   test eax,eax        ; SF = 1
///   cmovns edx,eax      ; not taken: EDX keeps SHLD's result
///   dec esi ; jnz top
///   hlt
/// ```
///
/// Compiled, EDX goes back to its value before the SHLD.
#[test]
fn a_cmov_not_taken_keeps_what_step_wrote() {
    let code = [
        0xbe, 0x10, 0x00, 0x00, 0x00, 0xb8, 0xff, 0xff, 0xff, 0xff, 0xba, 0x8e, 0x35, 0x53, 0x57,
        0xbd, 0xbb, 0x68, 0xd7, 0xb6, 0x0f, 0xa4, 0xea, 0x05, 0x85, 0xc0, 0x0f, 0x49, 0xd0, 0x4e,
        0x75, 0xf4, 0xf4,
    ];
    let failures = failures(&code);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Seeds 284 and 408: a shift or rotate by CL with CL = 0 changes neither its destination
/// nor the flags, also when the instruction before it (run through `step`) just wrote them.
///
/// ```text
///   mov esi,16 ; xor ecx,ecx ; xor eax,eax ; mov ebx,-7 ; mov edx,0x63
/// top:
///   btc dx,bx           ; through step: toggles bit 9 of DX, CF = the old bit
///   rol dx,cl           ; CL = 0: nothing changes
///   adc eax,0           ; counts CF
///   dec esi ; jnz top
///   hlt
/// ```
///
/// Compiled, DX and CF go back to their values before the BTC.
#[test]
fn a_rotate_by_cl_0_keeps_what_step_wrote() {
    let code = [
        0xbe, 0x10, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x31, 0xc0, 0xbb, 0xf9, 0xff, 0xff, 0xff, 0xba,
        0x63, 0x00, 0x00, 0x00, 0x66, 0x0f, 0xbb, 0xda, 0x66, 0xd3, 0xc2, 0x83, 0xd0, 0x00, 0x4e,
        0x75, 0xf3, 0xf4,
    ];
    let failures = failures(&code);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same with SHL r32, CL (its own fast kind) after SHLD:
///
/// ```text
///   mov esi,16 ; xor ecx,ecx ; mov ebx,3 ; mov edx,0x63
/// top:
///   shld edx,ebx,4      ; through step
///   shl edx,cl          ; CL = 0: nothing changes
///   dec esi ; jnz top
///   hlt
/// ```
#[test]
fn a_shift_by_cl_0_keeps_what_step_wrote() {
    let code = [
        0xbe, 0x10, 0x00, 0x00, 0x00, 0x31, 0xc9, 0xbb, 0x03, 0x00, 0x00, 0x00, 0xba, 0x63, 0x00,
        0x00, 0x00, 0x0f, 0xa4, 0xda, 0x04, 0xd3, 0xe2, 0x4e, 0x75, 0xf7, 0xf4,
    ];
    let failures = failures(&code);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Found booting Linux: a conditional jump to the very next instruction, taken, in the middle
/// of a block (`test eax,eax ; je $+2 ; ret`) does not end the interpreter's block, so the
/// compiled block must not end there either (or a budget that ends right after the block
/// stops at a different instruction).
///
/// ```text
///   mov esi,300 ; xor eax,eax
/// top:
///   call f ; dec esi ; jnz top
///   hlt
/// f:
///   test eax,eax ; je $+2 ; ret
/// ```
#[test]
fn a_branch_to_the_next_instruction_goes_on_in_the_block() {
    let code = [
        0xbe, 0x2c, 0x01, 0x00, 0x00, 0x31, 0xc0, 0xe8, 0x04, 0x00, 0x00, 0x00, 0x4e, 0x75, 0xf8,
        0xf4, 0x85, 0xc0, 0x74, 0x00, 0xc3,
    ];
    let failures = failures(&code);
    assert!(failures.is_empty(), "{failures:#?}");
    // And with budgets of every size around the block.
    for slice in 2..12 {
        sample::same_with_and_without(&code, slice, engine(), 1).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Compiled code reaches memory through flat data segments with no segment check; a region
/// compiled that way must stop using that shortcut the moment a segment stops being flat
/// (here DS gets base 0x100 in the middle of the loop, in the flat unreal-mode setup).
///
/// ```text
///   mov dword [0x8000],5 ; mov dword [0x8100],7 ; mov ecx,200 ; xor esi,esi
/// again:
///   mov ebx,[0x8000] ; add esi,ebx
///   cmp ecx,100 ; jne skip
///   mov ax,0x10 ; mov ds,ax      ; DS base 0x100: [0x8000] is now 0x8100
/// skip:
///   dec ecx ; jnz again
///   hlt
/// ```
#[test]
fn a_segment_load_in_a_compiled_loop_ends_the_flat_shortcut() {
    let code = [
        0xc7, 0x05, 0x00, 0x80, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0xc7, 0x05, 0x00, 0x81, 0x00,
        0x00, 0x07, 0x00, 0x00, 0x00, 0xb9, 0xc8, 0x00, 0x00, 0x00, 0x31, 0xf6, 0x8b, 0x1d, 0x00,
        0x80, 0x00, 0x00, 0x01, 0xde, 0x83, 0xf9, 0x64, 0x75, 0x06, 0x66, 0xb8, 0x10, 0x00, 0x8e,
        0xd8, 0x49, 0x75, 0xea, 0xf4,
    ];
    let failures = failures(&code);
    assert!(failures.is_empty(), "{failures:#?}");
    let cpu = sample::same_with_and_without(&code, 100_000, engine(), 1).unwrap();
    assert_eq!(cpu.regs[wasm86::cpu::ESI], 101 * 5 + 99 * 7);
}

/// A REPE CMPSB that compiled code hands to the interpreter's handler partway, whose first
/// element then faults (#PF): the exception sees the flags of the last compare done inline,
/// as it does under the interpreter alone (the EFLAGS it pushes are compared).
///
/// ```text
///   mov ebp,4
/// top:
///   mov esi,0xa000 ; mov edi,0xbff0 ; mov ecx,16   ; equal bytes (zeros), within the page
///   cmp ebp,1 ; jne skip
///   mov ecx,40 ; add ebp,0 ; jmp skip               ; last pass: on into the absent page,
/// skip:                                              ; with ZF = 0 from the ADD
///   repe cmpsb
///   dec ebp ; jnz top
///   int 0x30
/// ```
#[test]
fn a_rep_compare_handed_over_faults_with_the_flags_of_its_last_compare() {
    let code = vec![
        0xbd, 0x04, 0x00, 0x00, 0x00, 0xbe, 0x00, 0xa0, 0x00, 0x00, 0xbf, 0xf0, 0xbf, 0x00, 0x00,
        0xb9, 0x10, 0x00, 0x00, 0x00, 0x83, 0xfd, 0x01, 0x75, 0x0a, 0xb9, 0x28, 0x00, 0x00, 0x00,
        0x83, 0xc5, 0x00, 0xeb, 0x00, 0xf3, 0xa6, 0x4d, 0x75, 0xdd, 0xcd, 0x30,
    ];
    let p = Program {
        seed: 0,
        mode: Mode::Paged,
        planned: Planned::PageNotPresent,
        exit: random_program::CODE + code.len() as u32 - 2,
        code,
        data: vec![0; (random_program::DATA_END - random_program::DATA) as usize],
        iterations: 4,
        fault_pass: Some(3),
        units: 0,
    };
    let plain = random_program::run_plain(&p, 1_000_000);
    assert_eq!(
        random_program::outcome(&p, &plain),
        random_program::Outcome::Exception {
            vector: 14,
            error: Some(4)
        }
    );
    for (slice, threshold) in [(100_000, 1), (7, 1), (1000, 2)] {
        let cpu = random_program::same_with_and_without(&p, slice, engine(), threshold)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cpu.jit_stats().compiled_instructions > 0);
    }
}
