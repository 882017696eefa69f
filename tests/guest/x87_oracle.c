/* Oracle for tests/guest/x87_math.asm: runs the same x87 instruction sequences on the host's
 * real x87 (x86-64) and prints the results as Rust byte arrays, which are pasted into
 * X87_ORACLE in tests/guest_programs.rs. Rebuild with:
 *     gcc -O0 -o /tmp/x87_oracle tests/guest/x87_oracle.c && /tmp/x87_oracle
 * Every block starts with FNINIT, as in the guest program; keep the two in step. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const double c_a = 1.1, c_b = 3.3, c_two = 2.0, c_three = 3.0, c_five = 5.0,
                    c_seven = 7.0, c_ten = 10.0, c_thousand = 1000.0, c_x = 100.3, c_big = 1e30,
                    c_p25 = 2.5, c_m25 = -2.5, c_i64 = 12345678901234.5678,
                    c_neg = -9876543210.75, c_bcd = -987654321.0, c_huge = 1e20;

static void print(const char *name, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("    (\"%s\", &[", name);
    for (size_t i = 0; i < n; i++)
        printf("%s0x%02X", i ? ", " : "", b[i]);
    printf("]),\n");
}

/* FNINIT; FLDCW cw; <body>; FSTP TBYTE result. */
#define T80(name, cw, body, ...)                                                                  \
    do {                                                                                          \
        unsigned char t[10];                                                                      \
        uint16_t c = (cw);                                                                        \
        __asm__ volatile("fninit\n\tfldcw %1\n\t" body "\n\tfstpt %0\n\tfninit"                   \
                         : "=m"(t)                                                                \
                         : "m"(c), ##__VA_ARGS__);                                                \
        print(name, t, 10);                                                                       \
    } while (0)

int main(void) {
    T80("x_mul", 0x037F, "fldl %2\n\tfmull %3", "m"(c_a), "m"(c_b));
    T80("x_div", 0x037F, "fld1\n\tfdivl %2", "m"(c_three));
    T80("x_div24", 0x007F, "fld1\n\tfdivl %2", "m"(c_three));
    T80("x_divrz", 0x0F7F, "fld1\n\tfdivl %2", "m"(c_three));
    T80("x_sqrt", 0x037F, "fldl %2\n\tfsqrt", "m"(c_two));
    T80("x_sin", 0x037F, "fld1\n\tfsin");
    T80("x_sin_big", 0x037F, "fldl %2\n\tfsin", "m"(c_thousand));
    T80("x_atan", 0x037F, "fld1\n\tfldl %2\n\tfpatan", "m"(c_two));
    T80("x_yl2x", 0x037F, "fldl %2\n\tfldl %3\n\tfyl2x", "m"(c_three), "m"(c_ten));

    {   /* Rounded up to a double. */
        double d;
        uint16_t c = 0x0B7F;
        __asm__ volatile("fninit\n\tfldcw %1\n\tfld1\n\tfdivl %2\n\tfstpl %0"
                         : "=m"(d) : "m"(c), "m"(c_three));
        print("x_divru_d", &d, 8);
    }
    {   /* FPREM: one step (small exponent difference), status word after it. */
        unsigned char t[10];
        uint16_t sw;
        __asm__ volatile("fninit\n\tfldl %2\n\tfldl %3\n\tfprem\n\tfnstsw %1\n\tfstpt %0\n\tfninit"
                         : "=m"(t), "=m"(sw) : "m"(c_seven), "m"(c_x));
        print("x_prem", t, 10);
        print("x_prem_sw", &sw, 2);
    }
    {   /* FPREM until C2 clears (1e30 mod 3): the final remainder, status and step count. */
        unsigned char t[10];
        uint16_t sw;
        uint32_t n = 0;
        __asm__ volatile("fninit\n\tfldl %3\n\tfldl %4\n"
                         "1:\n\tfprem\n\tincl %2\n\tfnstsw %%ax\n\ttestb $4, %%ah\n\tjnz 1b\n\t"
                         "movw %%ax, %1\n\tfstpt %0\n\tfninit"
                         : "=m"(t), "=m"(sw), "+r"(n) : "m"(c_three), "m"(c_big) : "eax", "cc");
        print("x_prem_big", t, 10);
        print("x_prem_big_sw", &sw, 2);
        print("x_prem_iters", &n, 4);
    }
    {   /* FRNDINT of 2.5 and -2.5 under RN, RD, RU, RZ. */
        static const uint16_t cws[4] = {0x037F, 0x077F, 0x0B7F, 0x0F7F};
        double r[8];
        for (int i = 0; i < 4; i++) {
            __asm__ volatile("fninit\n\tfldcw %2\n\tfldl %3\n\tfrndint\n\tfstpl %0\n\t"
                             "fldl %4\n\tfrndint\n\tfstpl %1"
                             : "=m"(r[i]), "=m"(r[4 + i])
                             : "m"(cws[i]), "m"(c_p25), "m"(c_m25));
        }
        print("x_rnd", r, 64);
    }
    {   /* FISTP to int64 (nearest), a negative one, an out-of-range one; FISTP word of 2.5. */
        int64_t q[3];
        int16_t w;
        __asm__ volatile("fninit\n\tfldl %4\n\tfistpll %0\n\tfldl %5\n\tfistpll %1\n\t"
                         "fldl %6\n\tfistpll %2\n\tfldl %7\n\tfistps %3\n\tfninit"
                         : "=m"(q[0]), "=m"(q[1]), "=m"(q[2]), "=m"(w)
                         : "m"(c_i64), "m"(c_neg), "m"(c_huge), "m"(c_p25));
        print("x_i64", q, 24);
        print("x_i16", &w, 2);
    }
    {
        unsigned char t[10];
        __asm__ volatile("fninit\n\tfldl %1\n\tfbstp %0" : "=m"(t) : "m"(c_bcd));
        print("x_bcd", t, 10);
    }
    {   /* FCOM + FNSTSW AX + SAHF: 2.0 < 3.0 sets C0, so CF, so JB is taken. */
        uint16_t ax;
        uint32_t taken = 0;
        __asm__ volatile("fninit\n\tfldl %2\n\tfcoml %3\n\tfnstsw %%ax\n\tsahf\n\tjnb 1f\n\t"
                         "movl $1, %1\n1:\n\tmovw %%ax, %0\n\tfninit"
                         : "=m"(ax), "+m"(taken) : "m"(c_two), "m"(c_three) : "eax", "cc");
        print("x_fcom_ax", &ax, 2);
        print("x_fcom_taken", &taken, 4);
    }
    {   /* FCOMI (7.0 vs 5.0): OF SF ZF AF PF CF; FCMOVNBE picks ST1. */
        unsigned char t[10];
        uint64_t fl;
        __asm__ volatile("fninit\n\tfldl %2\n\tfldl %3\n\tfcomi %%st(1), %%st\n\tpushfq\n\t"
                         "popq %1\n\tfcmovnbe %%st(1), %%st\n\tfstpt %0\n\tfninit"
                         : "=m"(t), "=r"(fl) : "m"(c_five), "m"(c_seven) : "cc");
        uint32_t f = (uint32_t)fl & 0x8D5;
        print("x_fcomi_fl", &f, 4);
        print("x_fcmov", t, 10);
    }
    {   /* Unmasked zero divide: the status word right after FDIVP (before any waiting
         * instruction, which would raise #MF). */
        uint16_t sw;
        uint16_t c = 0x037B;
        __asm__ volatile("fninit\n\tfldcw %1\n\tfld1\n\tfldz\n\tfdivrp %%st, %%st(1)\n\t"
                         "fnstsw %0\n\tfnclex\n\tfninit"
                         : "=m"(sw) : "m"(c));
        print("x_mf_sw", &sw, 2);
    }
    {   /* ST0 after FXSAVE, FNINIT, FXRSTOR. */
        unsigned char t[10];
        static unsigned char area[512] __attribute__((aligned(16)));
        uint16_t c = 0x0F7F;
        __asm__ volatile("fninit\n\tfldcw %2\n\tfldpi\n\tfld1\n\tfldl %3\n\tfxsave %1\n\t"
                         "fninit\n\tfxrstor %1\n\tfstpt %0\n\tfninit"
                         : "=m"(t), "+m"(area) : "m"(c), "m"(c_a));
        print("x_fx_st0", t, 10);
        print("x_fx_head", area, 8);
    }
    return 0;
}
