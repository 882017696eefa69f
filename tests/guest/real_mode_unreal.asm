; Real-mode things a BIOS, DOS and a boot loader rely on. Exceptions through the IVT: DIV by zero
; and DIV overflow (#DE, the saved IP is the DIV), BOUND out of range (#BR, a fault), INTO with
; OF set (a trap, IP after it), an offset past a 64 KiB limit (#GP, vector 13). Unreal mode: load
; a 4 GiB data segment in protected mode, clear PE without a far jump, reload the selector in
; real mode (the 4 GiB limit stays) and reach memory above 1 MiB with 32-bit offsets.
; The A20 gate: the program halts at the end of each phase and the test driver flips A20 with
; cpu.set_a20() (phase 1: on, phase 2: off, phase 3: on again); FFFF:0600 reaches 0x1005F0 or
; wraps to 0x5F0.

%include "common.inc"
org LOAD_ADDR

FLAT_SEL    equ 0x10
WRAP_LIN    equ 0x5F0               ; FFFF:0600 with A20 off
HIGH_LIN    equ 0x1005F0            ; FFFF:0600 with A20 on

r_phase         equ RESULTS + 0x04
r_ex_count      equ RESULTS + 0x08
r_div_ok        equ RESULTS + 0x0C  ; AX after a DIV that does not fault
r_bound_ok      equ RESULTS + 0x10
r_into_noof     equ RESULTS + 0x14
r_unreal_2m     equ RESULTS + 0x18  ; read back from 0x200000 through unreal ES
r_unreal_es_lim equ RESULTS + 0x1C  ; LSL-free check: a read at ES:0xFFFFFC worked (1)
r_p1_high       equ RESULTS + 0x20  ; phase 1: FFFF:0600 after an unreal write to 0x1005F0
r_p1_low        equ RESULTS + 0x24  ; phase 1: 0000:05F0 (untouched)
r_p2_low        equ RESULTS + 0x28  ; phase 2: 0000:05F0 after writing FFFF:0600
r_p2_unreal_hi  equ RESULTS + 0x2C  ; phase 2: unreal read of 0x1005F0 (wraps to 0x5F0)
r_p2_3m         equ RESULTS + 0x30  ; phase 2: unreal read of 0x300000 (aliases 0x200000)
r_p3_high       equ RESULTS + 0x34  ; phase 3: FFFF:0600 again
r_p3_3m         equ RESULTS + 0x38  ; phase 3: 0x300000, no longer aliased
; Exception log: (vector, IP, CS) × 6.
r_ex0_vec       equ RESULTS + 0x40
r_ex0_ip        equ RESULTS + 0x44
r_ex0_cs        equ RESULTS + 0x48
r_ex1_vec       equ RESULTS + 0x4C
r_ex1_ip        equ RESULTS + 0x50
r_ex2_vec       equ RESULTS + 0x58
r_ex2_ip        equ RESULTS + 0x5C
r_ex3_vec       equ RESULTS + 0x64
r_ex3_ip        equ RESULTS + 0x68
r_ex4_vec       equ RESULTS + 0x70
r_ex4_ip        equ RESULTS + 0x74
EX_ENTRY        equ 12

; Run one instruction expected to raise an exception; the handler resumes after it.
%macro EXPECT_EX 1+
    mov word [fixup], %%resume
    %1
%%resume:
%endmacro
%macro IVT 2                        ; vector, handler
    mov word [(%1) * 4], %2
    mov word [(%1) * 4 + 2], 0
%endmacro

    bits 16
start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7000
    IVT 0, de_stub
    IVT 4, of_stub
    IVT 5, br_stub
    IVT 13, gp_stub
    mov dword [WRAP_LIN], 0x0BADC0DE

    ; ---- exceptions through the IVT ----
    mov ax, 100
    xor bl, bl
rm_div:
    EXPECT_EX div bl                    ; #DE: divide by zero
    mov ax, 0x1000
    mov bl, 2
rm_div2:
    EXPECT_EX div bl                    ; #DE: quotient 0x800 does not fit in AL
    mov ax, 0x1001
    mov bl, 0x20
    div bl                              ; 0x80 remainder 1: fine
    mov [r_div_ok], ax
    mov ax, 25
rm_bound:
    EXPECT_EX bound ax, [bounds]        ; 25 > 20: #BR
    mov ax, 15
    bound ax, [bounds]
    mov word [r_bound_ok], 1
    mov al, 0x10
    add al, 1                           ; OF = 0
    into                                ; no trap
    mov word [r_into_noof], 1
    mov al, 0x7F
    add al, 1                           ; OF = 1
    mov word [fixup], 0
    into                                ; INT 4, a trap
rm_into_after:
    xor ax, ax
    mov fs, ax
rm_gp:
    EXPECT_EX mov eax, [fs:dword 0x10000]    ; offset past the 64 KiB limit: #GP (vector 13)

    ; ---- unreal mode ----
    lgdt [gdt_desc]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    mov bx, FLAT_SEL
    mov es, bx                          ; a 4 GiB limit in ES's cache
    and al, 0xFE
    mov cr0, eax
    xor bx, bx
    mov es, bx                          ; real mode: base 0, the limit stays
    mov dword [es:dword 0x200000], 0xA0A0A0A0
    mov eax, [es:dword 0x200000]
    mov [r_unreal_2m], eax
    mov eax, [es:dword 0xFFFFFC]
    mov dword [r_unreal_es_lim], 1
    mov dword [es:dword HIGH_LIN], 0x5555AAAA
    mov bx, 0xFFFF
    mov gs, bx
    mov eax, [gs:0x600]
    mov [r_p1_high], eax
    mov eax, [WRAP_LIN]
    mov [r_p1_low], eax
    mov dword [r_phase], 1
    hlt                                 ; the driver turns A20 off

    ; ---- phase 2: A20 off ----
    mov dword [gs:0x600], 0x12345678    ; FFFF:0600 wraps to 0000:05F0
    mov eax, [WRAP_LIN]
    mov [r_p2_low], eax
    mov eax, [es:dword HIGH_LIN]
    mov [r_p2_unreal_hi], eax
    mov eax, [es:dword 0x300000]
    mov [r_p2_3m], eax
    mov dword [r_phase], 2
    hlt                                 ; the driver turns A20 on

    ; ---- phase 3: A20 on ----
    mov eax, [gs:0x600]
    mov [r_p3_high], eax
    mov eax, [es:dword 0x300000]
    mov [r_p3_3m], eax
    mov dword [r_phase], 3
    FINISH

; ---- exception handlers (IVT) ----
de_stub:
    push word 0
    jmp ex_common
of_stub:
    push word 4
    jmp ex_common
br_stub:
    push word 5
    jmp ex_common
gp_stub:
    push word 13
ex_common:
    push bp
    mov bp, sp                          ; [bp+2] vector, [bp+4] IP, [bp+6] CS, [bp+8] FLAGS
    push ax
    push bx
    mov bx, [r_ex_count]
    imul bx, bx, EX_ENTRY
    mov ax, [bp + 2]
    mov [r_ex0_vec + bx], ax
    mov ax, [bp + 4]
    mov [r_ex0_ip + bx], ax
    mov ax, [bp + 6]
    mov [r_ex0_cs + bx], ax
    inc word [r_ex_count]
    mov ax, [fixup]
    test ax, ax
    jz .out
    mov [bp + 4], ax
    mov word [fixup], 0
.out:
    pop bx
    pop ax
    pop bp
    add sp, 2
    iret

; ---- data ----
fixup:
    dw 0
bounds:
    dw 10, 20
align 8
gdt:
    STD_GDT
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
