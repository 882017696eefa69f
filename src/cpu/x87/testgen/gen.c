/* Test-vector generator for the x87 soft-float (src/cpu/x87/float80.rs).
 *
 * Runs every operation on the host's real x87 (x86-64 only: inline asm) with random and
 * edge-case operands under each precision/rounding control setting, and prints one line per
 * case:
 *
 *     op cw a b r1 r2 sw
 *
 * Values are hex: 80-bit operands as 20 digits (sign/exponent word, then the 64-bit
 * significand), memory results at their own width, "-" where absent. sw is the status word
 * after the operation (TOP masked off) starting from a cleared status word.
 *
 * Build and run:  gcc -O1 -o gen gen.c && ./gen | gzip -9 > vectors.txt.gz
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t m;
    uint16_t se;
} __attribute__((packed)) f80;

static uint64_t rs = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

static f80 mk(int sign, int exp, uint64_t m) {
    f80 r;
    r.m = m;
    r.se = (uint16_t)((sign << 15) | (exp & 0x7FFF));
    return r;
}

/* A significand with structure that exercises rounding. */
static uint64_t gen_mant(void) {
    uint64_t m = rnd();
    switch (rnd() % 8) {
    case 0: m &= ~0ULL << (rnd() % 64); break;               /* trailing zeros: exact ops */
    case 1: m |= (1ULL << (rnd() % 64)) - 1; break;          /* trailing ones */
    case 2: m = (m & 0xFFFFFF0000000000ULL) | ((rnd() & 3) == 0 ? 0x8000000000ULL : (rnd() & 1)); break;
    case 3: m = (m & ~0x7FFULL) | ((rnd() & 3) == 0 ? 0x400 : ((rnd() & 1) ? 0x3FF : 0x401)); break;
    case 4: m = (1ULL << 63) | ((rnd() & 3) ? 0 : (rnd() & 0xFF)); break;
    case 5: m = ~0ULL << (rnd() % 4); break;
    default: break;
    }
    return m | (1ULL << 63);
}

/* A random extended value: mostly normal numbers near 1, plus extremes and every special
 * class including the encodings the 387+ rejects. */
static f80 gen80(void) {
    int r = (int)(rnd() % 100);
    int s = (int)(rnd() & 1);
    uint64_t m = gen_mant();
    if (r < 55) return mk(s, 0x3FFF + (int)(rnd() % 80) - 40, m);
    if (r < 63) return mk(s, (int)(rnd() % 70) + 1, m);
    if (r < 70) return mk(s, 0x7FFE - (int)(rnd() % 70), m);
    if (r < 76) return mk(s, 1 + (int)(rnd() % 0x7FFE), m);
    if (r < 79) return mk(s, 0, 0);
    if (r < 82) return mk(s, 0x7FFF, 1ULL << 63);
    if (r < 85) return mk(s, 0x7FFF, (3ULL << 62) | (rnd() >> (2 + rnd() % 62)));       /* QNaN */
    if (r < 88) return mk(s, 0x7FFF, (1ULL << 63) | ((rnd() >> 2) | 1) >> (rnd() % 61)); /* SNaN */
    if (r < 94) return mk(s, 0, (m >> (1 + rnd() % 63)));                               /* denormal */
    if (r < 96) return mk(s, 0, m);                                                     /* pseudo-denormal */
    if (r < 98) return mk(s, 1 + (int)(rnd() % 0x7FFE), m >> (1 + rnd() % 63));         /* unnormal */
    return mk(s, 0x7FFF, (rnd() >> 1) >> (rnd() % 2 ? 0 : 62));                         /* pseudo-NaN/inf */
}

static int is_finite_normal(f80 a) {
    int e = a.se & 0x7FFF;
    return e != 0 && e != 0x7FFF && (a.m >> 63);
}

/* A second operand, often related to the first (close exponents, cancellation). */
static f80 gen_pair(f80 a) {
    f80 b = gen80();
    int r = (int)(rnd() % 10);
    if (is_finite_normal(a) && is_finite_normal(b) && r < 5) {
        int e = (a.se & 0x7FFF) + (int)(rnd() % 150) - 75;
        if (e < 1) e = 1;
        if (e > 0x7FFE) e = 0x7FFE;
        b.se = (uint16_t)((b.se & 0x8000) | e);
    } else if (r == 5) {
        b = a;
        b.se ^= 0x8000;
        if (rnd() & 1) b.m += (rnd() & 1) ? 1 : -1;
    } else if (r == 6) {
        b = a;
    }
    return b;
}

static void p80(f80 x) { printf(" %04x%016llx", x.se, (unsigned long long)x.m); }
static void pdash(void) { printf(" -"); }

#define CLOB "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)", "memory"

/* st0 = a, st1 = b; run INSN; results st0 and st1. */
#define OP2(INSN)                                                                      \
    __asm__ volatile("fninit\n\tfldcw %[cw]\n\tfldt %[b]\n\tfldt %[a]\n\tfnclex\n\t" INSN \
                     "\n\tfnstsw %[sw]\n\tfstpt %[r1]\n\tfstpt %[r2]\n\tfninit"          \
                     : [sw] "=m"(sw), [r1] "=m"(r1), [r2] "=m"(r2)                       \
                     : [cw] "m"(cw), [a] "m"(a), [b] "m"(b)                              \
                     : CLOB)

/* st0 = a; run INSN (which may push); results st0 and st1. */
#define OP1(INSN)                                                                         \
    __asm__ volatile("fninit\n\tfldcw %[cw]\n\tfldz\n\tfldt %[a]\n\tfnclex\n\t" INSN        \
                     "\n\tfnstsw %[sw]\n\tfstpt %[r1]\n\tfstpt %[r2]\n\tfninit"             \
                     : [sw] "=m"(sw), [r1] "=m"(r1), [r2] "=m"(r2)                          \
                     : [cw] "m"(cw), [a] "m"(a)                                             \
                     : CLOB)

/* st0 = a; store to memory with INSN (which pops). */
#define STORE(INSN, DST)                                                              \
    __asm__ volatile("fninit\n\tfldcw %[cw]\n\tfldt %[a]\n\tfnclex\n\t" INSN " %[d]\n\t" \
                     "fnstsw %[sw]\n\tfninit"                                          \
                     : [sw] "=m"(sw), [d] "=m"(DST)                                    \
                     : [cw] "m"(cw), [a] "m"(a)                                        \
                     : CLOB)

/* Load from memory with INSN; result st0. */
#define LOAD(INSN, SRC)                                                                    \
    __asm__ volatile("fninit\n\tfldcw %[cw]\n\tfnclex\n\t" INSN " %[s]\n\tfnstsw %[sw]\n\t" \
                     "fstpt %[r1]\n\tfninit"                                                \
                     : [sw] "=m"(sw), [r1] "=m"(r1)                                         \
                     : [cw] "m"(cw), [s] "m"(SRC)                                           \
                     : CLOB)

/* Unmasked exceptions: FNSAVE (non-waiting) captures the registers and status word without
 * triggering the pending exception; FNINIT then discards it. */
#define OPU(INSN)                                                                         \
    __asm__ volatile("fninit\n\tfldcw %[cw]\n\tfldt %[b]\n\tfldt %[a]\n\tfnclex\n\t" INSN \
                     "\n\tfnsave %[env]\n\tfninit"                                        \
                     : [env] "=m"(env)                                                    \
                     : [cw] "m"(cw), [a] "m"(a), [b] "m"(b)                               \
                     : CLOB)

static const uint16_t SWMASK = 0x477F; /* C3 C2 C1 C0, SF and the exception flags */

static void two(const char *name, int n, const uint16_t *cws, int ncw, int which) {
    for (int i = 0; i < n; i++) {
        f80 a = gen80(), b = gen_pair(a);
        if (rnd() & 1) { f80 t = a; a = b; b = t; }
        for (int c = 0; c < ncw; c++) {
            uint16_t cw = cws[c], sw;
            f80 r1, r2;
            switch (which) {
            case 0: OP2("fadd %%st(1), %%st"); break;
            case 1: OP2("fsub %%st(1), %%st"); break;
            case 2: OP2("fmul %%st(1), %%st"); break;
            case 3: OP2("fdiv %%st(1), %%st"); break;
            case 4: OP2("fprem"); break;
            case 5: OP2("fprem1"); break;
            case 6: OP2("fscale"); break;
            case 7: OP2("fcom %%st(1)"); break;
            case 8: OP2("fucom %%st(1)"); break;
            case 9: OP2("fpatan"); break;
            case 10: OP2("fyl2x"); break;
            case 11: OP2("fyl2xp1"); break;
            }
            printf("%s %04x", name, cw);
            p80(a);
            p80(b);
            p80(r1);
            if (which == 4 || which == 5 || which == 6) p80(r2); else pdash();
            printf(" %04x\n", sw & SWMASK);
        }
    }
}

static void one(const char *name, int n, const uint16_t *cws, int ncw, int which, f80 (*g)(void)) {
    for (int i = 0; i < n; i++) {
        f80 a = g();
        for (int c = 0; c < ncw; c++) {
            uint16_t cw = cws[c], sw;
            f80 r1, r2;
            int two_results = 0;
            switch (which) {
            case 0: OP1("fsqrt"); break;
            case 1: OP1("frndint"); break;
            case 2: OP1("fxtract"); two_results = 1; break;
            case 3: OP1("ftst"); break;
            case 4: OP1("fxam"); break;
            case 5: OP1("fsin"); break;
            case 6: OP1("fcos"); break;
            case 7: OP1("fptan"); two_results = 1; break;
            case 8: OP1("fsincos"); two_results = 1; break;
            case 9: OP1("f2xm1"); break;
            case 10: OP1("fchs"); break;
            case 11: OP1("fabs"); break;
            }
            printf("%s %04x", name, cw);
            p80(a);
            pdash();
            p80(r1);
            if (two_results) p80(r2); else pdash();
            printf(" %04x\n", sw & SWMASK);
        }
    }
}

static void stores(int n, const uint16_t *cws, int ncw) {
    for (int i = 0; i < n; i++) {
        f80 a = gen80();
        /* Values in integer range half of the time. */
        if ((rnd() & 1) && is_finite_normal(a)) a.se = (uint16_t)((a.se & 0x8000) | (0x3FFF + rnd() % 66));
        /* BCD range: up to 10^18. */
        f80 ab = a;
        if (is_finite_normal(ab) && (rnd() & 1)) ab.se = (uint16_t)((ab.se & 0x8000) | (0x3FFF + rnd() % 62));
        for (int c = 0; c < ncw; c++) {
            uint16_t cw = cws[c], sw;
            float f; double d; int16_t i16; int32_t i32; int64_t i64;
            uint8_t bcd[10];
            STORE("fstps", f);
            printf("st32 %04x", cw); p80(a); pdash();
            { uint32_t u; memcpy(&u, &f, 4); printf(" %08x - %04x\n", u, sw & SWMASK); }
            STORE("fstpl", d);
            printf("st64 %04x", cw); p80(a); pdash();
            { uint64_t u; memcpy(&u, &d, 8); printf(" %016llx - %04x\n", (unsigned long long)u, sw & SWMASK); }
            STORE("fistps", i16);
            printf("ist16 %04x", cw); p80(a); pdash(); printf(" %04x - %04x\n", (uint16_t)i16, sw & SWMASK);
            STORE("fistpl", i32);
            printf("ist32 %04x", cw); p80(a); pdash(); printf(" %08x - %04x\n", (uint32_t)i32, sw & SWMASK);
            STORE("fistpll", i64);
            printf("ist64 %04x", cw); p80(a); pdash();
            printf(" %016llx - %04x\n", (unsigned long long)i64, sw & SWMASK);
            /* BCD range: scale into up to 10^18. */
            {
                f80 sa = a;
                a = ab;
                STORE("fbstp", bcd);
                printf("bstp %04x", cw); p80(a); pdash(); printf(" ");
                for (int k = 9; k >= 0; k--) printf("%02x", bcd[k]);
                printf(" - %04x\n", sw & SWMASK);
                a = sa;
            }
        }
    }
}

static void loads(int n) {
    uint16_t cw = 0x037F, sw;
    f80 r1;
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)rnd();
        uint64_t v = rnd();
        switch (rnd() % 6) {
        case 0: u &= 0x807FFFFF; v &= 0x800FFFFFFFFFFFFFULL; break;  /* denormals/zero */
        case 1: u |= 0x7F800000; v |= 0x7FF0000000000000ULL; break;  /* inf/NaN */
        case 2: u &= 0xFF800000; v &= 0xFFF0000000000000ULL; break;  /* zero/inf/powers */
        default: break;
        }
        float f; double d;
        memcpy(&f, &u, 4);
        memcpy(&d, &v, 8);
        LOAD("flds", f);
        printf("ld32 %04x %08x - ", cw, u); p80(r1); printf(" - %04x\n", sw & SWMASK);
        LOAD("fldl", d);
        printf("ld64 %04x %016llx - ", cw, (unsigned long long)v); p80(r1); printf(" - %04x\n", sw & SWMASK);
        uint8_t bcd[10];
        for (int k = 0; k < 9; k++) {
            int lo = (int)(rnd() % 10), hi = (int)(rnd() % 10);
            if (rnd() % 50 == 0) lo = 10 + (int)(rnd() % 6);
            bcd[k] = (uint8_t)(lo | hi << 4);
        }
        bcd[9] = (uint8_t)(rnd() & 0x80) | ((rnd() % 8 == 0) ? (uint8_t)(rnd() & 0x7F) : 0);
        if (rnd() % 8 == 0) memset(bcd, 0, 9);
        LOAD("fbld", bcd);
        printf("bld %04x ", cw);
        for (int k = 9; k >= 0; k--) printf("%02x", bcd[k]);
        printf(" -");
        p80(r1);
        printf(" - %04x\n", sw & SWMASK);
    }
}

static void consts(void) {
    for (int rc = 0; rc < 4; rc++) {
        uint16_t cw = (uint16_t)(0x007F | (rc << 10) | (3 << 8)), sw;
        f80 r1;
        static const char *names[7] = {"ld1", "ldl2t", "ldl2e", "ldpi", "ldlg2", "ldln2", "ldz"};
        for (int k = 0; k < 7; k++) {
            switch (k) {
#define C(I) __asm__ volatile("fninit\n\tfldcw %[cw]\n\tfnclex\n\t" I "\n\tfnstsw %[sw]\n\tfstpt %[r1]\n\tfninit" \
                              : [sw] "=m"(sw), [r1] "=m"(r1) : [cw] "m"(cw) : CLOB)
            case 0: C("fld1"); break;
            case 1: C("fldl2t"); break;
            case 2: C("fldl2e"); break;
            case 3: C("fldpi"); break;
            case 4: C("fldlg2"); break;
            case 5: C("fldln2"); break;
            case 6: C("fldz"); break;
            }
            printf("%s %04x - -", names[k], cw);
            p80(r1);
            printf(" - %04x\n", sw & SWMASK);
        }
    }
}

/* Operands for the transcendentals: mostly in the documented domain, some specials. */
static f80 gen_trig(void) {
    if (rnd() % 10 == 0) return gen80();
    f80 a = mk((int)(rnd() & 1), 0x3FFF - 40 + (int)(rnd() % 104), gen_mant());
    if (rnd() % 8 == 0) {
        /* Near a multiple of pi/2 (the hardware's 66-bit pi decides the reduction). */
        static const long double pio2 = 1.57079632679489661923132169163975144L;
        long double x = pio2 * (long double)(1 + rnd() % 100000);
        memcpy(&a, &x, 10);
        a.m += (rnd() % 16) - 8;
    }
    return a;
}
static f80 gen_unit(void) { /* |x| <= 1 */
    if (rnd() % 10 == 0) return gen80();
    if (rnd() % 20 == 0) return mk((int)(rnd() & 1), 0x3FFF, 1ULL << 63);
    return mk((int)(rnd() & 1), 0x3FFE - (int)(rnd() % 70), gen_mant());
}
static f80 gen_any(void) { return gen80(); }

static void trans2(const char *name, int n, int which) {
    uint16_t cw = 0x037F;
    for (int i = 0; i < n; i++) {
        f80 a, b; /* a = st0 = x, b = st1 = y */
        if (rnd() % 8 == 0) { a = gen80(); b = gen80(); }
        else if (which == 11) { a = gen_unit(); if (is_finite_normal(a) && (a.se & 0x7FFF) > 0x3FFC) a.se -= 2; b = gen80(); }
        else if (which == 10) { a = gen80(); a.se &= 0x7FFF; b = gen80(); }
        else { a = gen80(); b = gen_pair(a); }
        uint16_t sw;
        f80 r1, r2;
        switch (which) {
        case 9: OP2("fpatan"); break;
        case 10: OP2("fyl2x"); break;
        default: OP2("fyl2xp1"); break;
        }
        printf("%s %04x", name, cw);
        p80(a);
        p80(b);
        p80(r1);
        pdash();
        printf(" %04x\n", sw & SWMASK);
    }
}

static void unmasked(const char *name, int n, int which) {
    static const uint16_t cws[4] = {0x0340, 0x0B40, 0x0040, 0x0240};
    for (int i = 0; i < n; i++) {
        f80 a = gen80(), b = gen_pair(a);
        if (rnd() & 1) { f80 t = a; a = b; b = t; }
        for (int c = 0; c < 4; c++) {
            uint16_t cw = cws[c];
            uint8_t env[108];
            switch (which) {
            case 0: OPU("fadd %%st(1), %%st"); break;
            case 1: OPU("fsub %%st(1), %%st"); break;
            case 2: OPU("fmul %%st(1), %%st"); break;
            case 3: OPU("fdiv %%st(1), %%st"); break;
            case 4: OPU("fsqrt"); break;
            case 5: OPU("fscale"); break;
            }
            f80 r1;
            uint16_t sw;
            memcpy(&r1, env + 28, 10);
            memcpy(&sw, env + 4, 2);
            printf("%s %04x", name, cw);
            p80(a);
            if (which == 4) pdash(); else p80(b);
            p80(r1);
            pdash();
            printf(" %04x\n", sw & SWMASK);
        }
    }
}

int main(int argc, char **argv) {
    int scale = argc > 1 ? atoi(argv[1]) : 1;
    uint16_t all[12], rcs[4], one_cw[1] = {0x037F};
    int k = 0;
    for (int pc = 0; pc < 4; pc++) {
        if (pc == 1) continue;
        for (int rc = 0; rc < 4; rc++) all[k++] = (uint16_t)(0x007F | (pc << 8) | (rc << 10));
    }
    for (int rc = 0; rc < 4; rc++) rcs[rc] = (uint16_t)(0x037F | (rc << 10));

    two("add", 500 * scale, all, 12, 0);
    two("sub", 500 * scale, all, 12, 1);
    two("mul", 500 * scale, all, 12, 2);
    two("div", 500 * scale, all, 12, 3);
    one("sqrt", 400 * scale, all, 12, 0, gen_any);
    unmasked("uadd", 300 * scale, 0);
    unmasked("usub", 300 * scale, 1);
    unmasked("umul", 300 * scale, 2);
    unmasked("udiv", 300 * scale, 3);
    unmasked("usqrt", 300 * scale, 4);
    unmasked("uscale", 300 * scale, 5);
    two("prem", 1500 * scale, one_cw, 1, 4);
    two("prem1", 1500 * scale, one_cw, 1, 5);
    two("scale", 500 * scale, rcs, 4, 6);
    two("com", 800 * scale, one_cw, 1, 7);
    two("ucom", 800 * scale, one_cw, 1, 8);
    one("rndint", 500 * scale, rcs, 4, 1, gen_any);
    one("xtract", 500 * scale, one_cw, 1, 2, gen_any);
    one("tst", 400 * scale, one_cw, 1, 3, gen_any);
    one("xam", 400 * scale, one_cw, 1, 4, gen_any);
    one("chs", 100 * scale, one_cw, 1, 10, gen_any);
    one("abs", 100 * scale, one_cw, 1, 11, gen_any);
    stores(300 * scale, rcs, 4);
    loads(800 * scale);
    consts();
    one("sin", 1000 * scale, one_cw, 1, 5, gen_trig);
    one("cos", 1000 * scale, one_cw, 1, 6, gen_trig);
    one("tan", 1000 * scale, one_cw, 1, 7, gen_trig);
    one("sincos", 1000 * scale, one_cw, 1, 8, gen_trig);
    one("f2xm1", 1000 * scale, one_cw, 1, 9, gen_unit);
    trans2("atan", 1000 * scale, 9);
    trans2("yl2x", 1000 * scale, 10);
    trans2("yl2xp1", 1000 * scale, 11);
    return 0;
}
