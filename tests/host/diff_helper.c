/* The host side of tests/differential.rs: runs random x86 code buffers on this machine's own
 * CPU and reports how each one ended.
 *
 * A static i386 Linux program (built by the test with `i686-linux-gnu-gcc -O2 -static`). It
 * reads cases from stdin until EOF; for each it fills the data pages, copies the code to its
 * page, loads the x87 state (FRSTOR), ES and FS, EFLAGS and all eight registers, and jumps to
 * the code.
 * The code ends with an instruction that traps (INT3), or faults earlier; either way the
 * signal handler records the registers, EFLAGS, EIP, the trap number and error code, CR2 and
 * the x87 state from the signal frame, then siglongjmps back to the loop, which writes the
 * record and the bytes of the data pages that changed to stdout.
 *
 * Memory, the same linear addresses as the wasm86 side (tests/differential.rs):
 *   CODE_BASE          one page, the code (read, write, execute here; read-only there),
 *                      then a guard page
 *   DATA_BASE - 64 KiB guard pages (PROT_NONE: every access faults, not present)
 *   DATA_BASE          RW_PAGES writable pages, refilled for every case
 *   + RW_PAGES * 4 KiB one read-only page, filled once at start-up
 *   + 4 KiB            guard pages up to DATA_BASE + 128 KiB
 * The code only ever addresses these pages (the generator makes sure), so it cannot touch
 * this program's own memory. The guard pages reach as far as a 16-bit offset (address-size
 * prefix) from a segment based near DATA_BASE, and a RET imm16 from the data pages. The handler checks that the faulting
 * EIP is in the code page, or is the address of an instruction fetch that faulted (a jump
 * to an address that is not mapped: below 64 KiB, or a guard page), or a single-step trap
 * before the first instruction there.
 *
 * Segments: DS, SS and CS are this program's flat ones. A case may also ask for a data
 * segment of its own (a TLS descriptor, set_thread_area) in FS, in ES or in both; otherwise
 * FS holds the null selector and ES the flat data segment. The kernel reloads ES (and DS)
 * with the flat selector when it delivers a signal, so the C code never sees the case's ES.
 * The case's EFLAGS.AC stays on in the handler: its first instructions clear it.
 *
 * Input, all little-endian (see `Case::encode` in tests/differential.rs):
 *   u32 magic 'CASE', u32 code length, code bytes, u32 EAX ECX EDX EBX ESP EBP ESI EDI,
 *   u32 EFLAGS, 108 bytes FRSTOR image, u32 segment use (bit 0: FS, bit 1: ES hold the
 *   case's segment), its u32 base, u32 limit (20 bits) and u32 flags (bit 0: limit in pages,
 *   bit 1: read-only, bit 2: expand-down), u64 fill seed, u32 patch count,
 *   per patch: u32 offset from DATA_BASE, u32 length, bytes.
 * Output per case:
 *   u32 magic 'RSLT', u32 signal, trap number, error code, CR2, u32 EAX ECX EDX EBX ESP EBP
 *   ESI EDI, EIP, EFLAGS, 108 bytes of FSAVE image from the signal frame, u32 run count, per
 *   run of changed data bytes: u32 offset from DATA_BASE, u32 length, bytes. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <asm/ldt.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define PAGE 4096u
#define CODE_BASE 0x10000000u
#define DATA_BASE 0x20000000u
#define RW_PAGES 3u
#define GUARD_BYTES 0x10000u /* below DATA_BASE; above, up to DATA_BASE + 0x20000 */
#define GUARD_END (DATA_BASE + 0x20000u)
#define RO_SEED 0x5244304e4c59ull /* the read-only page's fill */
#define MAGIC_CASE 0x45534143u    /* "CASE" */
#define MAGIC_RESULT 0x544c5352u  /* "RSLT" */
#define FSAVE_BYTES 108
#define MAX_CODE PAGE

static void die(const char *what) {
    fprintf(stderr, "diff_helper: %s\n", what);
    exit(2);
}

/* splitmix64, the same on both sides. */
static uint64_t splitmix(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill(uint8_t *p, size_t len, uint64_t seed) {
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = splitmix(&seed);
        memcpy(p + i, &v, 8);
    }
}

/* What enter_case loads: EFLAGS, then the registers in POPAD order (EDI ESI EBP, a skipped
 * ESP slot, EBX EDX ECX EAX); ESP comes from initial_esp. */
uint32_t entry_state[9];
uint32_t initial_esp;
uint32_t code_entry = CODE_BASE;
uint8_t fpu_image[FSAVE_BYTES];
/* The selectors enter_case loads into ES and FS. */
uint32_t es_sel, fs_sel;
static sigjmp_buf back_to_loop;
static char alt_stack[64 * 1024];

/* The record the signal handler fills. */
static struct {
    uint32_t signo, trapno, err, cr2;
    uint32_t regs[8]; /* EAX ECX EDX EBX ESP EBP ESI EDI */
    uint32_t eip, eflags;
    uint8_t fpu[FSAVE_BYTES];
} result;

/* Never returns: the case ends in the signal handler. Everything is loaded from memory at
 * absolute addresses, so no register is needed once POPAD has run. */
void enter_case(void);
__asm__(".text\n"
        ".globl enter_case\n"
        "enter_case:\n"
        "    fninit\n"
        "    frstor fpu_image\n"
        "    movl es_sel, %eax\n"
        "    movw %ax, %es\n"
        "    movl fs_sel, %eax\n"
        "    movw %ax, %fs\n"
        "    movl $entry_state, %esp\n"
        "    popfl\n"
        "    popal\n"
        "    movl initial_esp, %esp\n"
        "    jmp *code_entry\n");

/* The signal handler's entry: the kernel leaves EFLAGS.AC as the case had it, and with AC
 * set (Linux runs user code with CR0.AM) the C code would take alignment faults. */
void on_signal_entry(int, siginfo_t *, void *);
__asm__(".text\n"
        ".globl on_signal_entry\n"
        "on_signal_entry:\n"
        "    pushfl\n"
        "    andl $0xfffbffff, (%esp)\n"
        "    popfl\n"
        "    jmp on_signal\n");

__attribute__((used)) void on_signal(int signo, siginfo_t *info, void *context) {
    (void)info;
    ucontext_t *uc = context;
    greg_t *g = uc->uc_mcontext.gregs;
    uint32_t eip = (uint32_t)g[REG_EIP];
    /* Outside the code page, nothing has run: the fetch there faulted, or a single-step
     * trap came first (TF set before the jump there). */
    int fetch_fault = g[REG_TRAPNO] == 14 && (uint32_t)uc->uc_mcontext.cr2 == eip;
    int step_trap = g[REG_TRAPNO] == 1;
    if (eip - CODE_BASE >= PAGE && !fetch_fault && !step_trap) {
        /* A fault in this program itself: nothing sensible to report. */
        char msg[128];
        int n = snprintf(msg, sizeof msg,
                         "diff_helper: signal %d (trap %d) at %#x outside the code page\n", signo,
                         (int)g[REG_TRAPNO], eip);
        write(2, msg, n);
        _exit(3);
    }
    result.signo = (uint32_t)signo;
    result.trapno = (uint32_t)g[REG_TRAPNO];
    result.err = (uint32_t)g[REG_ERR];
    result.cr2 = (uint32_t)uc->uc_mcontext.cr2;
    static const int order[8] = {REG_EAX, REG_ECX, REG_EDX, REG_EBX,
                                 REG_UESP, REG_EBP, REG_ESI, REG_EDI};
    for (int i = 0; i < 8; i++)
        result.regs[i] = (uint32_t)g[order[i]];
    result.eip = eip;
    result.eflags = (uint32_t)g[REG_EFL];
    /* The kernel converts its XSAVE image to the FSAVE layout (cw, sw, full tag word
     * recomputed from the register contents, pointers, ST(0)..ST(7)) at the frame's start. */
    if (uc->uc_mcontext.fpregs)
        memcpy(result.fpu, uc->uc_mcontext.fpregs, FSAVE_BYTES);
    else
        memset(result.fpu, 0xFF, FSAVE_BYTES);
    siglongjmp(back_to_loop, 1);
}

static void read_exact(void *p, size_t n) {
    if (fread(p, 1, n, stdin) != n)
        die("truncated case on stdin");
}

static uint32_t read_u32(void) {
    uint32_t v;
    read_exact(&v, 4);
    return v;
}

static void write_out(const void *p, size_t n) {
    if (fwrite(p, 1, n, stdout) != n)
        die("stdout closed");
}

static void write_u32(uint32_t v) { write_out(&v, 4); }

static void map_fixed(uint32_t addr, size_t len, int prot) {
    void *p = mmap((void *)(uintptr_t)addr, len, prot,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != (void *)(uintptr_t)addr)
        die("cannot map the fixed test pages (address in use?)");
}

int main(void) {
    static uint8_t initial[RW_PAGES * PAGE];
    static uint8_t code[MAX_CODE];
    uint8_t *const data = (uint8_t *)(uintptr_t)DATA_BASE;

    map_fixed(CODE_BASE, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC);
    /* Jumps past the code fault there. */
    map_fixed(CODE_BASE + PAGE, PAGE, PROT_NONE);
    map_fixed(DATA_BASE - GUARD_BYTES, GUARD_BYTES, PROT_NONE);
    map_fixed(DATA_BASE, RW_PAGES * PAGE, PROT_READ | PROT_WRITE);
    map_fixed(DATA_BASE + RW_PAGES * PAGE, PAGE, PROT_READ | PROT_WRITE);
    fill(data + RW_PAGES * PAGE, PAGE, RO_SEED);
    if (mprotect(data + RW_PAGES * PAGE, PAGE, PROT_READ))
        die("mprotect");
    map_fixed(DATA_BASE + (RW_PAGES + 1) * PAGE, GUARD_END - (DATA_BASE + (RW_PAGES + 1) * PAGE),
              PROT_NONE);

    /* A TLS slot for the cases' own segment. */
    struct user_desc tls;
    memset(&tls, 0, sizeof tls);
    tls.entry_number = (unsigned)-1;
    tls.seg_32bit = 1;
    if (syscall(SYS_set_thread_area, &tls))
        die("set_thread_area");
    const uint32_t tls_sel = tls.entry_number * 8 + 3;
    uint32_t flat_es;
    __asm__("movl %%es, %0" : "=r"(flat_es));
    uint32_t last_seg[3] = {0, 0, 0xFFFFFFFF};

    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0};
    if (sigaltstack(&ss, NULL))
        die("sigaltstack");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal_entry;
    /* SA_NODEFER: the handler leaves by siglongjmp, so the signal must not stay blocked. */
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    const int signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP};
    for (unsigned i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (sigaction(signals[i], &sa, NULL))
            die("sigaction");

    static char inbuf[1 << 16], outbuf[1 << 16];
    setvbuf(stdin, inbuf, _IOFBF, sizeof inbuf);
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

    for (;;) {
        uint32_t magic;
        size_t got = fread(&magic, 1, 4, stdin);
        if (got == 0)
            break;
        if (got != 4 || magic != MAGIC_CASE)
            die("bad case magic");
        uint32_t code_len = read_u32();
        if (code_len > MAX_CODE)
            die("code too long");
        read_exact(code, code_len);
        uint32_t regs[8];
        read_exact(regs, sizeof regs);
        uint32_t eflags = read_u32();
        read_exact(fpu_image, FSAVE_BYTES);
        uint32_t seg_use = read_u32();
        uint32_t seg[3];
        read_exact(seg, sizeof seg);
        if (seg_use && memcmp(seg, last_seg, sizeof seg)) {
            tls.base_addr = seg[0];
            tls.limit = seg[1];
            tls.limit_in_pages = seg[2] & 1;
            tls.read_exec_only = (seg[2] >> 1) & 1;
            tls.contents = (seg[2] >> 2) & 1;
            tls.seg_32bit = 1;
            tls.seg_not_present = 0;
            tls.useable = 0;
            if (syscall(SYS_set_thread_area, &tls))
                die("set_thread_area for a case");
            memcpy(last_seg, seg, sizeof seg);
        }
        fs_sel = seg_use & 1 ? tls_sel : 0;
        es_sel = seg_use & 2 ? tls_sel : flat_es;
        uint64_t seed;
        read_exact(&seed, 8);
        fill(initial, sizeof initial, seed);
        uint32_t patches = read_u32();
        for (uint32_t i = 0; i < patches; i++) {
            uint32_t off = read_u32(), len = read_u32();
            if (off > sizeof initial || len > sizeof initial - off)
                die("patch outside the writable pages");
            read_exact(initial + off, len);
        }

        memcpy(data, initial, sizeof initial);
        /* The rest of the page is INT3s, as on the wasm86 side. */
        memset(code + code_len, 0xCC, MAX_CODE - code_len);
        memcpy((void *)(uintptr_t)CODE_BASE, code, MAX_CODE);
        entry_state[0] = eflags;
        entry_state[1] = regs[7]; /* EDI */
        entry_state[2] = regs[6]; /* ESI */
        entry_state[3] = regs[5]; /* EBP */
        entry_state[4] = 0;       /* skipped by POPAD */
        entry_state[5] = regs[3]; /* EBX */
        entry_state[6] = regs[2]; /* EDX */
        entry_state[7] = regs[1]; /* ECX */
        entry_state[8] = regs[0]; /* EAX */
        initial_esp = regs[4];

        if (sigsetjmp(back_to_loop, 0) == 0)
            enter_case();

        write_u32(MAGIC_RESULT);
        write_out(&result, sizeof result);
        /* Runs of changed bytes; runs closer than 8 bytes are merged. */
        uint32_t runs[2 * 512];
        uint32_t n = 0;
        for (uint32_t i = 0; i < sizeof initial;) {
            if (data[i] == initial[i]) {
                i++;
                continue;
            }
            uint32_t start = i, end = i + 1;
            for (uint32_t j = i + 1; j < sizeof initial && j < end + 8; j++)
                if (data[j] != initial[j])
                    end = j + 1;
            if (n == 512) {
                /* Too many runs: report the rest as one. */
                runs[2 * n - 1] = sizeof initial - runs[2 * n - 2];
                break;
            }
            runs[2 * n] = start;
            runs[2 * n + 1] = end - start;
            n++;
            i = end;
        }
        write_u32(n);
        for (uint32_t k = 0; k < n; k++) {
            write_u32(runs[2 * k]);
            write_u32(runs[2 * k + 1]);
            write_out(data + runs[2 * k], runs[2 * k + 1]);
        }
    }
    if (fflush(stdout))
        die("stdout");
    return 0;
}
