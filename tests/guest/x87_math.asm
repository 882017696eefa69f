; x87 arithmetic in 32-bit protected mode. Each block mirrors one in x87_oracle.c (the same
; instructions on the same inputs, starting from FNINIT), whose output on a real x87 is the
; bit-exact expectation in tests/guest_programs.rs (X87_ORACLE). Also: an unmasked zero divide
; with CR0.NE = 1 raising #MF at the next waiting instruction (the handler records the status
; word), the same with CR0.NE = 0 not faulting, and an FXSAVE/FNINIT/FXRSTOR/FXSAVE round trip.

%include "common.inc"
org LOAD_ADDR

r_mf_count      equ RESULTS + 0x04
r_mf_eip        equ RESULTS + 0x08
r_mf_vector     equ RESULTS + 0x0C
r_ne0_count     equ RESULTS + 0x10  ; #MF count after the CR0.NE = 0 zero divide

; Byte results at 0x600.., 16 bytes apart (the names the oracle prints).
%assign xo 0x600
%macro XSLOT 2
%1 equ xo
%assign xo xo + (((%2) + 15) & ~15)
%endmacro
XSLOT x_mul, 10
XSLOT x_div, 10
XSLOT x_div24, 10
XSLOT x_divrz, 10
XSLOT x_sqrt, 10
XSLOT x_sin, 10
XSLOT x_sin_big, 10
XSLOT x_atan, 10
XSLOT x_yl2x, 10
XSLOT x_divru_d, 8
XSLOT x_prem, 10
XSLOT x_prem_sw, 2
XSLOT x_prem_big, 10
XSLOT x_prem_big_sw, 2
XSLOT x_prem_iters, 4
XSLOT x_rnd, 64
XSLOT x_i64, 24
XSLOT x_i16, 2
XSLOT x_bcd, 10
XSLOT x_fcom_ax, 2
XSLOT x_fcom_taken, 4
XSLOT x_fcomi_fl, 4
XSLOT x_fcmov, 10
XSLOT x_mf_sw, 2
XSLOT x_ne0_sw, 2
XSLOT x_fx_st0, 10
FX1     equ 0x1000                  ; FXSAVE areas (16-byte aligned)
FX2     equ 0x1200
x_fx_head equ FX1

; FNINIT and load control word %1.
%macro BEGIN 1
    fninit
    mov word [cw], %1
    fldcw [cw]
%endmacro
; Store ST0 as 80 bits at %1 and reset.
%macro END80 1
    fstp tword [%1]
    fninit
%endmacro

start:
    ENTER_PM32 pm_main, 0x9F000

pm_main:
    SET_GATE 16, mf_handler, GATE_INT32, idt
    lidt [idt_desc]
    mov eax, cr0
    and eax, ~(0x4 | 0x8)               ; EM = 0, TS = 0
    or eax, 0x20 | 0x2                  ; NE = 1, MP = 1
    mov cr0, eax

    BEGIN 0x037F
    fld qword [c_a]
    fmul qword [c_b]
    END80 x_mul
    BEGIN 0x037F
    fld1
    fdiv qword [c_three]
    END80 x_div
    BEGIN 0x007F                        ; 24-bit precision
    fld1
    fdiv qword [c_three]
    END80 x_div24
    BEGIN 0x0F7F                        ; round toward zero
    fld1
    fdiv qword [c_three]
    END80 x_divrz
    BEGIN 0x037F
    fld qword [c_two]
    fsqrt
    END80 x_sqrt
    BEGIN 0x037F
    fld1
    fsin
    END80 x_sin
    BEGIN 0x037F
    fld qword [c_thousand]
    fsin
    END80 x_sin_big
    BEGIN 0x037F
    fld1
    fld qword [c_two]
    fpatan                              ; atan(1 / 2)
    END80 x_atan
    BEGIN 0x037F
    fld qword [c_three]
    fld qword [c_ten]
    fyl2x                               ; 3 * log2(10)
    END80 x_yl2x

    BEGIN 0x0B7F                        ; round up, stored as a double
    fld1
    fdiv qword [c_three]
    fstp qword [x_divru_d]

    ; FPREM, one step.
    fninit
    fld qword [c_seven]
    fld qword [c_x]
    fprem
    fnstsw [x_prem_sw]
    fstp tword [x_prem]
    fninit
    ; FPREM until C2 clears.
    fninit
    fld qword [c_three]
    fld qword [c_big]
    xor ecx, ecx
.prem:
    fprem
    inc ecx
    fnstsw ax
    test ah, 4
    jnz .prem
    mov [x_prem_big_sw], ax
    mov [x_prem_iters], ecx
    fstp tword [x_prem_big]
    fninit

    ; FRNDINT of 2.5 and -2.5 under RN, RD, RU, RZ.
    xor esi, esi
.rnd:
    fninit
    fldcw [rnd_cws + esi * 2]
    fld qword [c_p25]
    frndint
    fstp qword [x_rnd + esi * 8]
    fld qword [c_m25]
    frndint
    fstp qword [x_rnd + 32 + esi * 8]
    inc esi
    cmp esi, 4
    jb .rnd

    ; FISTP: int64 nearest, a negative one, out of range (integer indefinite); a word.
    fninit
    fld qword [c_i64]
    fistp qword [x_i64]
    fld qword [c_neg]
    fistp qword [x_i64 + 8]
    fld qword [c_huge]
    fistp qword [x_i64 + 16]
    fld qword [c_p25]
    fistp word [x_i16]
    fninit

    fninit
    fld qword [c_bcd]
    fbstp [x_bcd]

    ; FCOM + FNSTSW AX + SAHF: 2.0 < 3.0 sets C0 → CF → JB taken.
    fninit
    fld qword [c_two]
    fcom qword [c_three]
    fnstsw ax
    sahf
    jnb .not_below
    mov dword [x_fcom_taken], 1
.not_below:
    mov [x_fcom_ax], ax
    fninit

    ; FCOMI and FCMOV.
    fninit
    fld qword [c_five]
    fld qword [c_seven]
    fcomi st0, st1
    pushfd
    fcmovnbe st0, st1                   ; before the AND below changes EFLAGS
    pop eax
    and eax, 0x8D5
    mov [x_fcomi_fl], eax
    fstp tword [x_fcmov]
    fninit

    ; Unmasked zero divide, CR0.NE = 1: #MF at the next waiting instruction.
    BEGIN 0x037B
    fld1
    fldz
    fdivp st1, st0                      ; 1 / 0: ZE, ES; no fault yet
mf_wait:
    fwait                               ; #MF; the handler clears the exception, FWAIT reruns
    fninit

    ; The same with CR0.NE = 0: no #MF (the error would go out on FERR#).
    mov eax, cr0
    and eax, ~0x20
    mov cr0, eax
    BEGIN 0x037B
    fld1
    fldz
    fdivp st1, st0
    fwait
    fnstsw [x_ne0_sw]
    mov eax, [r_mf_count]
    mov [r_ne0_count], eax
    fnclex
    fninit

    ; FXSAVE / FNINIT / FXRSTOR / FXSAVE.
    mov eax, cr4
    or eax, 1 << 9                      ; OSFXSR
    mov cr4, eax
    BEGIN 0x0F7F
    fldpi
    fld1
    fld qword [c_a]
    fxsave [FX1]
    fninit
    fxrstor [FX1]
    fxsave [FX2]
    fstp tword [x_fx_st0]
    fninit
    FINISH

mf_handler:
    push eax
    fnstsw ax
    mov [x_mf_sw], ax
    mov eax, [esp + 4]
    mov [r_mf_eip], eax
    mov dword [r_mf_vector], 16
    inc dword [r_mf_count]
    fnclex
    pop eax
    iretd

; ---- data ----
align 8
c_a         dq 1.1
c_b         dq 3.3
c_two       dq 2.0
c_three     dq 3.0
c_five      dq 5.0
c_seven     dq 7.0
c_ten       dq 10.0
c_thousand  dq 1000.0
c_x         dq 100.3
c_big       dq 1e30
c_p25       dq 2.5
c_m25       dq -2.5
c_i64       dq 12345678901234.5678
c_neg       dq -9876543210.75
c_bcd       dq -987654321.0
c_huge      dq 1e20
rnd_cws     dw 0x037F, 0x077F, 0x0B7F, 0x0F7F
cw          dw 0
align 8
gdt:
    STD_GDT
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd idt
align 8
idt:
    times 256 * 8 db 0
