//! End-to-end guest programs: each tests/guest/<name>.asm is assembled with `nasm -f bin` at test
//! time, loaded at 0000:7C00 into a CPU fresh from RESET and run in real mode until it halts.
//! Programs do what an OS or a monitor does (enter protected mode, build IDT/GDT/TSS, drop to
//! ring 3, page, switch tasks, run V86 code, use the debug registers and the FPU), record what
//! their handlers see (frames, error codes, CR2, DR6, ...) in a results table at 0x500, store the
//! "DONE" marker and HLT. The test checks the table by the symbol names of its slots, which it
//! reads from nasm's map file, so the .asm file is the one place a slot is defined.
//!
//! nasm is required (`make test` installs it through scripts/setup.sh): without it the tests fail.

#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use wasm86::cpu::{Cpu, RunExit, SegCache, Segment, ESP};

/// Where programs are loaded and start (real mode, CS = 0).
const LOAD_ADDR: u32 = 0x7C00;
/// Results table; its first dword holds DONE_MAGIC when the program finished.
const RESULTS: u32 = 0x500;
const DONE_MAGIC: u32 = 0x454E_4F44;
/// Instructions a program may run before the test gives up.
const BUDGET: u64 = 5_000_000;

/// An assembled guest program with its symbols, running on its own CPU.
struct Guest {
    name: &'static str,
    cpu: Cpu,
    syms: HashMap<String, u32>,
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest")
}

/// Assemble tests/guest/<name>.asm; returns the flat binary and the symbol table from the map.
fn assemble(name: &str) -> (Vec<u8>, HashMap<String, u32>) {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest");
    std::fs::create_dir_all(&out_dir).expect("create the guest output directory");
    let src = source_dir().join(format!("{name}.asm"));
    let bin = out_dir.join(format!("{name}.bin"));
    let map = out_dir.join(format!("{name}.map"));
    // The map directive goes into a pre-included file so the sources need not name a path.
    let pre = out_dir.join(format!("{name}.pre.inc"));
    std::fs::write(&pre, format!("[map symbols {}]\n", map.display())).expect("write pre-include");
    let mut include = source_dir().into_os_string();
    include.push("/");
    let output = match Command::new("nasm")
        .arg("-f")
        .arg("bin")
        .arg("-Werror")
        .arg("-i")
        .arg(&include)
        .arg("-P")
        .arg(&pre)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run nasm ({e}): the guest-program tests need it; install it with \
             scripts/setup.sh (`make test` does) or `apt-get install -y nasm`"
        ),
    };
    assert!(
        output.status.success(),
        "nasm failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&bin).expect("read the assembled binary");
    let text = std::fs::read_to_string(&map).expect("read the nasm map file");
    (bytes, parse_map(&text))
}

/// Symbols from a nasm map file: lines "VALUE NAME" (no section) and "REAL VIRTUAL NAME".
fn parse_map(text: &str) -> HashMap<String, u32> {
    let mut syms = HashMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !(2..=3).contains(&words.len()) {
            continue;
        }
        let (name, values) = words.split_last().expect("two or three words");
        let parsed: Option<Vec<u32>> = values
            .iter()
            .map(|v| u32::from_str_radix(v, 16).ok())
            .collect();
        if let Some(v) = parsed {
            syms.insert((*name).to_string(), *v.last().expect("one value at least"));
        }
    }
    syms
}

impl Guest {
    /// Assemble and load `name`; the CPU starts in real mode at 0000:7C00.
    fn boot(name: &'static str) -> Guest {
        let (bytes, syms) = assemble(name);
        let mut cpu = Cpu::with_ram(16 << 20);
        cpu.reset();
        cpu.mem.load(LOAD_ADDR, &bytes);
        cpu.segs[Segment::CS as usize] = SegCache::real(0);
        cpu.eip = LOAD_ADDR;
        cpu.regs[ESP] = 0x7000;
        Guest { name, cpu, syms }
    }

    /// Run until the program halts; panics on shutdown or when the budget runs out.
    fn run(&mut self) {
        let exit = self.cpu.run(BUDGET);
        assert_eq!(
            exit,
            RunExit::Halted,
            "{}: did not halt ({exit:?}) at {:04x}:{:08x}\n{}",
            self.name,
            self.cpu.segs[Segment::CS as usize].selector,
            self.cpu.eip,
            self.dump()
        );
    }

    /// Run to the final HLT and check the DONE marker.
    fn run_to_done(&mut self) {
        self.run();
        assert_eq!(
            self.mem32(RESULTS),
            DONE_MAGIC,
            "{}: halted without the DONE marker at {:04x}:{:08x}\n{}",
            self.name,
            self.cpu.segs[Segment::CS as usize].selector,
            self.cpu.eip,
            self.dump()
        );
    }

    fn sym(&self, name: &str) -> u32 {
        match self.syms.get(name) {
            Some(v) => *v,
            None => panic!("{}: no symbol {name} in the map file", self.name),
        }
    }

    fn mem(&self, addr: u32, len: usize) -> &[u8] {
        &self.cpu.mem.ram[addr as usize..addr as usize + len]
    }

    fn mem32(&self, addr: u32) -> u32 {
        u32::from_le_bytes(self.mem(addr, 4).try_into().expect("4 bytes"))
    }

    /// The dword at symbol `name`.
    fn slot(&self, name: &str) -> u32 {
        self.mem32(self.sym(name))
    }

    /// Check dword slots by name; reports every mismatch at once.
    fn expect(&self, want: &[(&str, u32)]) {
        let bad: Vec<String> = want
            .iter()
            .filter_map(|&(name, v)| {
                let got = self.slot(name);
                (got != v).then(|| format!("  {name}: got {got:#010x}, want {v:#010x}"))
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{}: {} wrong result(s):\n{}\n{}",
            self.name,
            bad.len(),
            bad.join("\n"),
            self.dump()
        );
    }

    /// Check `want.len()` bytes at symbol `name`.
    fn expect_bytes(&self, name: &str, want: &[u8]) {
        let got = self.mem(self.sym(name), want.len());
        assert_eq!(got, want, "{}: bytes at {name}", self.name);
    }

    /// The results table and the registers, for failure messages.
    fn dump(&self) -> String {
        let mut slots: Vec<(&String, &u32)> = self
            .syms
            .iter()
            .filter(|(n, a)| n.starts_with("r_") && (RESULTS..RESULTS + 0x400).contains(*a))
            .collect();
        slots.sort_by_key(|(n, a)| (**a, (*n).clone()));
        let mut s = String::from("results:\n");
        for (n, a) in slots {
            s += &format!("  {n} @{a:#x} = {:#010x}\n", self.mem32(*a));
        }
        s += &format!(
            "regs {:08x?} eflags {:08x} cr0 {:08x} cr2 {:08x} cpl {}",
            &self.cpu.regs[..8],
            self.cpu.flags.word(),
            self.cpu.cr0,
            self.cpu.cr2,
            self.cpu.cpl
        );
        s
    }
}

/// Real mode → protected mode → ring 3 through IRET; INT 0x80 system calls through a DPL-3 trap
/// gate; privileged and IOPL-sensitive instructions at ring 3 raise #GP(0).
#[test]
fn pm_entry_and_rings() {
    let mut g = Guest::boot("pm_entry_and_rings");
    g.run_to_done();
    let s = |n: &str| g.sym(n);
    g.expect(&[
        // INT 0x80 from ring 3: a privilege change, the frame holds the user CS/SS:ESP.
        ("r_sys_count", 1),
        ("r_sys_cs", 0x1B),
        ("r_sys_cpl", 3),
        ("r_sys_eip", s("u_after_int")),
        ("r_sys_ss", 0x23),
        ("r_sys_esp", 0x80000 - 4),
        ("r_sys_eflags", 0x0000_0202),
        ("r_sys_handler_ss", 0x10),
        ("r_sys_handler_esp", 0x9E000 - 20),
        ("r_sys_ret", 0x1234_5678),
        // Each ring-3 #GP: error code 0 and the faulting EIP.
        ("r_gp_count", 7),
        ("r_gp0_err", 0),
        ("r_gp0_eip", s("u_cli")),
        ("r_gp0_op", 0xFA),
        ("r_gp1_err", 0),
        ("r_gp1_eip", s("u_hlt")),
        ("r_gp1_op", 0xF4),
        ("r_gp2_err", 0),
        ("r_gp2_eip", s("u_movcr")),
        ("r_gp2_op", 0x0F),
        ("r_gp3_err", 0),
        ("r_gp3_eip", s("u_in")),
        ("r_gp3_op", 0xE4),
        ("r_gp4_err", 0),
        ("r_gp4_eip", s("u_sti")),
        ("r_gp4_op", 0xFB),
        // Loading a ring-0 data selector into DS at ring 3: #GP(selector).
        ("r_gp5_err", 0x10),
        ("r_gp5_eip", s("u_movds")),
        ("r_gp5_op", 0x8E),
        // INT 13 at ring 3 through a DPL-0 gate: #GP(IDT selector: 13 * 8 + 2).
        ("r_gp6_err", 13 * 8 + 2),
        ("r_gp6_eip", s("u_int13")),
        ("r_gp6_op", 0xCD),
        // IRET to ring 3 nulls a data segment register holding a ring-0 selector.
        ("r_user_fs", 0),
        ("r_user_ds", 0x23),
        // #UD from UD2 at ring 3.
        ("r_ud_eip", s("u_ud2")),
        ("r_ud_cs", 0x1B),
        // The user registers survived the faults.
        ("r_user_ebx", 0xCAFE_F00D),
        ("r_exit_cpl", 3),
    ]);
    assert_eq!(g.cpu.cpl, 0);
}

/// Page faults from ring 3 and ring 0 (not present, read-only, supervisor, CR0.WP), demand
/// paging and fix-ups in the handler, accessed/dirty bits, INVLPG, global pages across a CR3
/// reload.
#[test]
fn paging_faults() {
    const P: u32 = 1;
    const W: u32 = 2;
    const U: u32 = 4;
    const A: u32 = 0x20;
    const D: u32 = 0x40;
    let mut g = Guest::boot("paging_faults");
    g.run_to_done();
    let s = |n: &str| g.sym(n);
    g.expect(&[
        ("r_unexpected", 0),
        ("r_pf_count", 7),
        // Ring-3 read of a not-present page; the handler mapped it and the read restarted.
        ("r_pf0_cr2", 0x30_0010),
        ("r_pf0_err", U),
        ("r_pf0_eip", s("u_np")),
        ("r_np_val", 0x5EED_0001),
        // Ring-3 write to a read-only user page.
        ("r_pf1_cr2", 0x30_1020),
        ("r_pf1_err", P | W | U),
        ("r_pf1_eip", s("u_ro_w") + 10),
        ("r_ro_val", 0xAAAA),
        // Ring-3 read and write of a supervisor page.
        ("r_pf2_cr2", 0x30_2000),
        ("r_pf2_err", P | U),
        ("r_pf2_eip", s("u_sup_r") + 10),
        ("r_sup_val", 0xFFFF_FFFF),
        ("r_pf3_cr2", 0x30_2004),
        ("r_pf3_err", P | W | U),
        ("r_pf3_eip", s("u_sup_w") + 10),
        // Instruction fetch crossing into a not-present page: EIP is the instruction, CR2 the
        // second page; after the handler maps it the instruction runs.
        ("r_pf4_cr2", 0x30_C000),
        ("r_pf4_err", U),
        ("r_pf4_eip", 0x30_BFFD),
        ("r_x_eax", 0x1234_5678),
        ("r_pte_x2", 0x30_C000 | P | W | U | A),
        // Ring 3 jumping into a supervisor page: the fault is on the target's fetch.
        ("r_pf5_cr2", 0x30_2100),
        ("r_pf5_err", P | U),
        ("r_pf5_eip", 0x30_2100),
        // Ring-0 write to the read-only page: allowed with WP = 0, #PF(P|W) with WP = 1.
        ("r_wp0_val", 0xBEEF),
        ("r_pf6_cr2", 0x30_1024),
        ("r_pf6_err", P | W),
        ("r_pf6_eip", s("k_wp1") + 10),
        ("r_cr2_final", 0x30_1024),
        // Accessed and dirty bits.
        ("r_pte_np", 0x30_0000 | P | W | U | A),
        ("r_pte_ro", 0x30_1000 | P | U | A | D),
        ("r_pte_sup", 0x30_2000 | P | W | A | D),
        ("r_pte_idle", 0x30_3000 | P | W | U),
        ("r_pte_wr", 0x30_4000 | P | W | U | A | D),
        ("r_pte_rd", 0x30_5000 | P | W | U | A),
        ("r_pde0", 0x2_1000 | P | W | U | A),
        ("r_pde1", 0x40_0000 | P | W | A | 0x80 | 0x100),
        // INVLPG picks up a changed PTE.
        ("r_inv_before", 0x1111),
        ("r_inv_after", 0x2222),
        // CR3 reload: the non-global page is re-walked, the global 4 MiB page is not, until
        // INVLPG.
        ("r_ng_before", 0x3333),
        ("r_ng_after_cr3", 0x9999),
        ("r_big_before", 0x4444_0000),
        ("r_big_after_cr3", 0x4444_0000),
        ("r_big_after_inv", 0x8888_0000),
    ]);
}

/// JMP to a TSS and back, CALL through a task gate and IRET back (busy bits, NT, back link),
/// and a double fault (#PF while pushing the #PF frame) handled by a task through a task gate.
#[test]
fn task_switch_double_fault() {
    const BUSY_TSS32: u32 = 0x8B;
    const AVAIL_TSS32: u32 = 0x89;
    const NT: u32 = 0x4000;
    let mut g = Guest::boot("task_switch_double_fault");
    g.run_to_done();
    let s = |n: &str| g.sym(n);
    g.expect(&[
        ("r_unexpected", 0),
        ("r_main_acc0", BUSY_TSS32),
        // In task B after JMP: main is no longer busy, B is, no nesting.
        ("r_b_tr", 0x30),
        ("r_b_nt", 0),
        ("r_b_link", 0),
        ("r_b_main_acc", AVAIL_TSS32),
        ("r_b_own_acc", BUSY_TSS32),
        ("r_b_main_eip", s("main_after_jmp")),
        ("r_b_main_eax", 0x1111_0000),
        // Back in main after B's JMP.
        ("r_a_eax", 0x1111_0000),
        ("r_a_tr", 0x28),
        ("r_a_b_acc", AVAIL_TSS32),
        ("r_a_main_acc", BUSY_TSS32),
        ("r_b_saved_eip", s("b_after_jmp")),
        // In task C after CALL through the task gate: nested.
        ("r_c_tr", 0x38),
        ("r_c_nt", NT),
        ("r_c_link", 0x28),
        ("r_c_main_acc", BUSY_TSS32),
        ("r_c_own_acc", BUSY_TSS32),
        // Back in main after C's IRET.
        ("r_r_eax", 0x2222_0000),
        ("r_r_nt", 0),
        ("r_r_tr", 0x28),
        ("r_r_c_acc", AVAIL_TSS32),
        ("r_r_main_acc", BUSY_TSS32),
        // C's saved EFLAGS: NT cleared by the IRET; PF from its last AND (result 0x4000).
        ("r_r_c_eflags", 0x2 | 0x4),
        ("r_r_c_eip", s("c_after_iret")),
        ("r_r_c_link", 0x28),
        // The #DF task: nested under main, error code 0 on its stack.
        ("r_df_tr", 0x40),
        ("r_df_link", 0x28),
        ("r_df_nt", NT),
        ("r_df_err", 0),
        ("r_df_esp", 0x72000 - 4),
        ("r_df_cs", 0x08),
        ("r_df_main_acc", BUSY_TSS32),
        ("r_df_own_acc", BUSY_TSS32),
        // The interrupted ring-3 state, saved in main's TSS, is the faulting instruction.
        ("r_df_old_eip", s("u_fault")),
        ("r_df_old_cs", 0x1B),
        ("r_df_old_esp", 0x80000),
        ("r_df_old_ss", 0x23),
        ("r_df_old_eax", 0x3333_0000),
    ]);
    // CR2 holds the second fault's address: the kernel stack page below ESP0.
    let cr2 = g.slot("r_df_cr2");
    assert!(
        (0x4F_FFE8..=0x4F_FFFC).contains(&cr2),
        "CR2 in the #DF task: {cr2:#x}"
    );
}

/// A V86 monitor: IOPL-sensitive instructions trap to #GP at IOPL 0 and are emulated; at IOPL 3
/// they run directly and INT n reaches ring 0 through the IDT with a V86 frame.
#[test]
fn v86_monitor() {
    let mut g = Guest::boot("v86_monitor");
    g.run_to_done();
    let s = |n: &str| g.sym(n);
    g.expect(&[
        ("r_unexpected", 0),
        ("r_gp_count", 10),
        ("r_gp_err_or", 0),
        ("r_gp0_lin", s("v_cli")),
        ("r_gp0_op", 0xFA),
        ("r_gp1_lin", s("v_pushf")),
        ("r_gp1_op", 0x9C),
        ("r_gp2_lin", s("v_sti")),
        ("r_gp2_op", 0xFB),
        ("r_gp3_lin", s("v_popf")),
        ("r_gp3_op", 0x9D),
        ("r_gp4_lin", s("v_int")),
        ("r_gp4_op", 0xCD),
        ("r_gp5_lin", s("v_in")),
        ("r_gp5_op", 0xE4),
        ("r_gp6_lin", s("v_out")),
        ("r_gp6_op", 0xE6),
        ("r_gp7_lin", s("v_hlt1")),
        ("r_gp7_op", 0xF4),
        ("r_gp8_lin", s("v_in2")),
        ("r_gp8_op", 0xE4),
        ("r_gp9_lin", s("v_hlt2")),
        ("r_gp9_op", 0xF4),
        // What the emulation produced.
        ("r_v_pushf", 0x0002),
        ("r_m_popf", 0x0201),
        ("r_m_vif", 1),
        ("r_m_int_vec", 0x21),
        ("r_v_int_ax", 0x4321),
        ("r_v_in_al", 0x5A),
        ("r_m_out_al", 0x77),
        // IOPL 3: direct CLI/STI/POPF (POPF cannot change IOPL in V86 mode). ZF and PF come
        // from the V86 code's XOR AX, AX.
        ("r_p2_cli", 0x3046),
        ("r_p2_sti", 0x3246),
        ("r_p2_popf", 0x3AD7),
        // INT 30h from V86: ring 0, the full V86 frame, null data segments.
        ("r_i_cpl", 0),
        ("r_i_handler_esp", 0x9E000 - 36),
        ("r_i_eip", s("v_after_int")),
        ("r_i_cs", 0),
        ("r_i_eflags", 0x2_0000 | 0x3AD7),
        ("r_i_esp", 0x1000),
        ("r_i_ss", 0x6000),
        ("r_i_es", 0x1000),
        ("r_i_ds", 0x0050),
        ("r_i_fs", 0x2000),
        ("r_i_gs", 0x3000),
        ("r_i_sregs", 0),
        // Back in V86 mode after the IRET.
        ("r_v_ret_ax", 0x7777),
        ("r_v_ret_es", 0x1000),
        ("r_v_ret_sp", 0x1000),
    ]);
}

/// Debug registers and traps: execute and data breakpoints, TF single-step, INT3, DR7.GD.
#[test]
fn debug_registers() {
    const DR6_ONES: u32 = 0xFFFF_0FF0;
    const B0: u32 = 1;
    const B1: u32 = 2;
    const BD: u32 = 1 << 13;
    const BS: u32 = 1 << 14;
    let mut g = Guest::boot("debug_registers");
    g.run_to_done();
    let s = |n: &str| g.sym(n);
    g.expect(&[
        ("r_db_count", 6),
        // DR0 execute breakpoint: a fault before the instruction, which then runs once.
        ("r_db0_eip", s("bp_exec")),
        ("r_db0_dr6", DR6_ONES | B0),
        ("r_db0_dr7", 0x401),
        ("r_exec_ran", 1),
        // DR1 write breakpoint: no hit on a read; a trap after the write, which happened.
        ("r_read_hits", 1),
        ("r_db1_eip", s("w_after")),
        ("r_db1_dr6", DR6_ONES | B1),
        // TF: three traps after s1, s2, s3; s4 runs untraced.
        ("r_db2_eip", s("s2")),
        ("r_db2_dr6", DR6_ONES | BS),
        ("r_db3_eip", s("s3")),
        ("r_db3_dr6", DR6_ONES | BS),
        ("r_db4_eip", s("s4")),
        ("r_db4_dr6", DR6_ONES | BS),
        ("r_steps_done", 4),
        // INT3: a trap, EIP after the instruction.
        ("r_bp_eip", s("bp_after")),
        ("r_bp_count", 1),
        // DR7.GD: a fault on MOV from DR0, BD set, GD cleared on delivery.
        ("r_db5_eip", s("gd_instr")),
        ("r_db5_dr6", DR6_ONES | BD),
        ("r_db5_dr7", 0x400),
        ("r_gd_eax", s("bp_exec")),
        ("r_dr7_final", 0x400),
        ("r_dr6_clean", DR6_ONES),
    ]);
    assert_eq!(g.slot("r_watch_in_db"), 0x1234);
}

/// Results of tests/guest/x87_oracle.c on a real x87 (an x86-64 host): the bytes each block of
/// x87_math.asm must store, bit for bit.
const X87_ORACLE: &[(&str, &[u8])] = &[
    (
        "x_mul",
        &[0xAE, 0x53, 0xB8, 0x1E, 0x85, 0xEB, 0x51, 0xE8, 0x00, 0x40],
    ),
    (
        "x_div",
        &[0xAB, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xFD, 0x3F],
    ),
    (
        "x_div24",
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0xAB, 0xAA, 0xAA, 0xFD, 0x3F],
    ),
    (
        "x_divrz",
        &[0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xFD, 0x3F],
    ),
    (
        "x_sqrt",
        &[0x84, 0x64, 0xDE, 0xF9, 0x33, 0xF3, 0x04, 0xB5, 0xFF, 0x3F],
    ),
    (
        "x_sin",
        &[0x21, 0x70, 0x67, 0x48, 0x78, 0xA4, 0x6A, 0xD7, 0xFE, 0x3F],
    ),
    (
        "x_sin_big",
        &[0xD7, 0x5A, 0x03, 0x51, 0xA8, 0x60, 0xAE, 0xD3, 0xFE, 0x3F],
    ),
    (
        "x_atan",
        &[0x45, 0x7B, 0xDA, 0x0D, 0x2B, 0x38, 0x63, 0xED, 0xFD, 0x3F],
    ),
    (
        "x_yl2x",
        &[0x3F, 0xA8, 0xD4, 0xD9, 0x38, 0xDA, 0x73, 0x9F, 0x02, 0x40],
    ),
    (
        "x_divru_d",
        &[0x56, 0x55, 0x55, 0x55, 0x55, 0x55, 0xD5, 0x3F],
    ),
    (
        "x_prem",
        &[0x00, 0x00, 0x33, 0x33, 0x33, 0x33, 0x33, 0x93, 0x00, 0x40],
    ),
    ("x_prem_sw", &[0x00, 0x71]),
    (
        "x_prem_big",
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0xFF, 0x3F],
    ),
    ("x_prem_big_sw", &[0x00, 0x33]),
    ("x_prem_iters", &[0x02, 0x00, 0x00, 0x00]),
    (
        "x_rnd",
        &[
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x40, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x08, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0,
        ],
    ),
    (
        "x_i64",
        &[
            0xF3, 0x2F, 0xCE, 0x73, 0x3A, 0x0B, 0x00, 0x00, 0x15, 0xE9, 0x4F, 0xB3, 0xFD, 0xFF,
            0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80,
        ],
    ),
    ("x_i16", &[0x02, 0x00]),
    (
        "x_bcd",
        &[0x21, 0x43, 0x65, 0x87, 0x09, 0x00, 0x00, 0x00, 0x00, 0x80],
    ),
    ("x_fcom_ax", &[0x00, 0x39]),
    ("x_fcom_taken", &[0x01, 0x00, 0x00, 0x00]),
    ("x_fcomi_fl", &[0x00, 0x00, 0x00, 0x00]),
    (
        "x_fcmov",
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xA0, 0x01, 0x40],
    ),
    ("x_mf_sw", &[0x84, 0xB0]),
    (
        "x_fx_st0",
        &[0x00, 0xD0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0x8C, 0xFF, 0x3F],
    ),
    (
        "x_fx_head",
        &[0x7F, 0x0F, 0x00, 0x28, 0xE0, 0x00, 0x00, 0x00],
    ),
];

/// x87 arithmetic, transcendentals, rounding control, integer and BCD stores, compares into
/// EFLAGS, #MF with CR0.NE = 1 (and none with NE = 0), FXSAVE/FXRSTOR.
#[test]
fn x87_math() {
    let mut g = Guest::boot("x87_math");
    g.run_to_done();
    for (name, want) in X87_ORACLE {
        if *name == "x_fx_head" {
            // FCW, FSW, abridged FTW; the FOP/FIP/FDP fields depend on the addresses.
            g.expect_bytes(name, &want[..5]);
        } else {
            g.expect_bytes(name, want);
        }
    }
    // With NE = 0 the zero divide leaves the same status word without faulting.
    let mf_sw = X87_ORACLE.iter().find(|(n, _)| *n == "x_mf_sw").unwrap().1;
    g.expect_bytes("x_ne0_sw", mf_sw);
    let mf_wait = g.sym("mf_wait");
    g.expect(&[
        ("r_mf_count", 1),
        ("r_mf_eip", mf_wait),
        ("r_mf_vector", 16),
        ("r_ne0_count", 1),
    ]);
    // FXRSTOR then FXSAVE reproduces the saved image (control/status, tags, registers).
    assert_eq!(g.mem(0x1000, 160), g.mem(0x1200, 160), "FXSAVE round trip");
}

/// Real mode: #DE/#BR/INTO/#GP through the IVT, unreal mode, and the A20 gate flipped by the
/// driver between phases.
#[test]
fn real_mode_unreal() {
    let mut g = Guest::boot("real_mode_unreal");
    g.cpu.set_a20(true);
    g.run();
    assert_eq!(g.slot("r_phase"), 1, "phase 1\n{}", g.dump());
    g.cpu.set_a20(false);
    g.cpu.halted = false;
    g.run();
    assert_eq!(g.slot("r_phase"), 2, "phase 2\n{}", g.dump());
    g.cpu.set_a20(true);
    g.cpu.halted = false;
    g.run_to_done();
    let s = |n: &str| g.sym(n);
    g.expect(&[
        ("r_ex_count", 5),
        // #DE (faults: the IP of the DIV, CS 0).
        ("r_ex0_vec", 0),
        ("r_ex0_ip", s("rm_div") + 6),
        ("r_ex0_cs", 0),
        ("r_ex1_vec", 0),
        ("r_ex1_ip", s("rm_div2") + 6),
        ("r_div_ok", 0x0180),
        // #BR: a fault.
        ("r_ex2_vec", 5),
        ("r_ex2_ip", s("rm_bound") + 6),
        ("r_bound_ok", 1),
        // INTO: only with OF set, a trap.
        ("r_into_noof", 1),
        ("r_ex3_vec", 4),
        ("r_ex3_ip", s("rm_into_after")),
        // Past the 64 KiB limit in real mode.
        ("r_ex4_vec", 13),
        ("r_ex4_ip", s("rm_gp") + 6),
        // Unreal mode.
        ("r_unreal_2m", 0xA0A0_A0A0),
        ("r_unreal_es_lim", 1),
        // A20 on: FFFF:0600 is 0x1005F0.
        ("r_p1_high", 0x5555_AAAA),
        ("r_p1_low", 0x0BAD_C0DE),
        // A20 off: it wraps to 0x5F0, and so does every address with bit 20 set.
        ("r_p2_low", 0x1234_5678),
        ("r_p2_unreal_hi", 0x1234_5678),
        ("r_p2_3m", 0xA0A0_A0A0),
        // A20 on again: the high memory was untouched.
        ("r_p3_high", 0x5555_AAAA),
        ("r_p3_3m", 0),
    ]);
}

/// Self-modifying code in real mode and in paged protected mode.
#[test]
fn smc() {
    let mut g = Guest::boot("smc");
    g.run_to_done();
    assert_eq!(g.sym("cross16_bl"), 0x9003);
    assert_eq!(g.sym("cross32_bl"), 0xA002);
    g.expect(&[
        ("r_rm_same", 0x42),
        ("r_rm_next", 0x43),
        ("r_rm_call1", 0x11),
        ("r_rm_call2", 0x22),
        ("r_rm_x1_eax", 0x1111_1111),
        ("r_rm_x1_bl", 0x22),
        ("r_rm_x2_eax", 0x1133_1111),
        ("r_rm_x2_bl", 0x44),
        ("r_rm_x3_eax", 0x1133_1155),
        ("r_pm_same", 0x52),
        ("r_pm_next", 0x53),
        ("r_pm_call1", 0x22),
        ("r_pm_call2", 0x33),
        ("r_pm_x1_eax", 0x1111_1111),
        ("r_pm_x1_bl", 0x22),
        ("r_pm_x2_eax", 0x1133_1111),
        ("r_pm_x2_bl", 0x44),
        ("r_pm_x3_eax", 0x1133_1155),
        ("r_pm_loop", 15),
        ("r_pm_alias", 0x66),
        ("r_pm_remap1", 0xAAAA),
        ("r_pm_remap2", 0xBBBB),
    ]);
}

/// Every program above again, with the compiling tier at its most eager threshold (through the
/// native wasm engine), in slices of a few hundred instructions beside the interpreter alone:
/// after every slice both CPUs must be in the same state (registers, EIP, EFLAGS, CR0/CR2/CR3,
/// CPL, the retired count, the first 2 MiB of RAM). The programs fault on purpose inside
/// compiled code (page faults, #GP at ring 3, #DE, double faults through a task gate), switch
/// modes, tasks and rings, and rewrite their own code.
#[test]
fn every_guest_program_runs_the_same_with_the_compiling_tier() {
    let programs = [
        "pm_entry_and_rings",
        "paging_faults",
        "task_switch_double_fault",
        "v86_monitor",
        "debug_registers",
        "x87_math",
        "real_mode_unreal",
        "smc",
    ];
    for name in programs {
        for slice in [1000, 97] {
            let mut plain = Guest::boot(name);
            let mut compiled = Guest::boot(name);
            compiled.cpu.set_jit(
                Some(Box::new(wasm86::jit::wasmi_engine::WasmiEngine::new())),
                1,
            );
            compiled.cpu.set_jit_first_start(true);
            let state = |c: &Cpu| {
                (
                    c.regs,
                    c.eip,
                    c.flags.word(),
                    (c.cr0, c.cr2, c.cr3, c.cpl),
                    c.instructions,
                    c.halted,
                )
            };
            // real_mode_unreal halts after each phase for the test to switch the A20 gate.
            let a20 = name == "real_mode_unreal";
            for g in [&mut plain, &mut compiled] {
                if a20 {
                    g.cpu.set_a20(true);
                }
            }
            let mut total = 0;
            loop {
                let a = plain.cpu.run(slice);
                let b = compiled.cpu.run(slice);
                let at = format!("{name}, slices of {slice}, after {total} instructions");
                assert_eq!(a, b, "{at}: exits");
                assert_eq!(state(&plain.cpu), state(&compiled.cpu), "{at}: state");
                let differ =
                    (0..2 << 20).find(|&n| plain.cpu.mem.ram[n] != compiled.cpu.mem.ram[n]);
                assert_eq!(differ, None, "{at}: RAM differs at");
                assert_eq!(compiled.cpu.jit_error(), None, "{at}");
                total += slice;
                if a20 && a == RunExit::Halted && plain.mem32(RESULTS) != DONE_MAGIC {
                    let on = plain.slot("r_phase") != 1;
                    for g in [&mut plain, &mut compiled] {
                        g.cpu.set_a20(on);
                        g.cpu.halted = false;
                    }
                    continue;
                }
                if a != RunExit::Budget || total > BUDGET {
                    break;
                }
            }
            assert_eq!(plain.mem32(RESULTS), DONE_MAGIC, "{name}: not done");
            assert!(
                compiled.cpu.jit_stats().regions_compiled > 0,
                "{name}: {:?}",
                compiled.cpu.jit_stats()
            );
        }
    }
}
