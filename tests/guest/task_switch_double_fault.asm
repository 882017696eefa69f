; Hardware task switching as 32-bit kernels used it.
; Part A (paging off, CPL 0): JMP to a TSS and back (busy bits move, no back link, NT clear);
; CALL through a task gate (NT set, back link, the caller stays busy) and IRET back through the
; back link (the callee becomes available, its saved EFLAGS has NT clear).
; Part B (Linux-style double-fault task): paging on, ESP0 of the main TSS points at an unmapped
; page. Ring 3 touches an unmapped address: delivering that #PF faults on the kernel stack push
; (#PF during #PF) → #DF, whose IDT entry is a task gate to a separate TSS. The #DF task records
; its TR, back link, NT, error code, CR2 and the interrupted task's state from the old TSS.

%include "common.inc"
org LOAD_ADDR

SEL_TSS_MAIN    equ 0x28
SEL_TSS_B       equ 0x30
SEL_TSS_C       equ 0x38
SEL_TSS_DF      equ 0x40
SEL_GATE_C      equ 0x48
PAGE_DIR        equ 0x20000
EFLAGS_NT       equ 0x4000
BAD_KSTACK      equ 0x500000        ; not mapped: the #PF frame push faults
USER_FAULT_ADDR equ 0x600000        ; not mapped

; TSS field offsets.
T_LINK   equ 0x00
T_ESP0   equ 0x04
T_SS0    equ 0x08
T_CR3    equ 0x1C
T_EIP    equ 0x20
T_EFLAGS equ 0x24
T_EAX    equ 0x28
T_ESP    equ 0x38
T_ES     equ 0x48
T_CS     equ 0x4C
T_SS     equ 0x50
T_DS     equ 0x54
T_FS     equ 0x58
T_GS     equ 0x5C
T_IOMAP  equ 0x66

r_main_acc0     equ RESULTS + 0x04  ; after LTR
r_b_tr          equ RESULTS + 0x08
r_b_nt          equ RESULTS + 0x0C
r_b_link        equ RESULTS + 0x10
r_b_main_acc    equ RESULTS + 0x14
r_b_own_acc     equ RESULTS + 0x18
r_b_main_eip    equ RESULTS + 0x1C
r_b_main_eax    equ RESULTS + 0x20
r_a_eax         equ RESULTS + 0x24  ; main after JMP back
r_a_tr          equ RESULTS + 0x28
r_a_b_acc       equ RESULTS + 0x2C
r_a_main_acc    equ RESULTS + 0x30
r_b_saved_eip   equ RESULTS + 0x34
r_c_tr          equ RESULTS + 0x38
r_c_nt          equ RESULTS + 0x3C
r_c_link        equ RESULTS + 0x40
r_c_main_acc    equ RESULTS + 0x44
r_c_own_acc     equ RESULTS + 0x48
r_r_eax         equ RESULTS + 0x4C  ; main after IRET back from C
r_r_nt          equ RESULTS + 0x50
r_r_tr          equ RESULTS + 0x54
r_r_c_acc       equ RESULTS + 0x58
r_r_main_acc    equ RESULTS + 0x5C
r_r_c_eflags    equ RESULTS + 0x60
r_r_c_eip       equ RESULTS + 0x64
r_r_c_link      equ RESULTS + 0x68
r_df_tr         equ RESULTS + 0x6C
r_df_link       equ RESULTS + 0x70
r_df_nt         equ RESULTS + 0x74
r_df_err        equ RESULTS + 0x78
r_df_esp        equ RESULTS + 0x7C
r_df_cr2        equ RESULTS + 0x80
r_df_old_eip    equ RESULTS + 0x84
r_df_old_cs     equ RESULTS + 0x88
r_df_old_esp    equ RESULTS + 0x8C
r_df_old_ss     equ RESULTS + 0x90
r_df_old_eax    equ RESULTS + 0x94
r_df_main_acc   equ RESULTS + 0x98
r_df_own_acc    equ RESULTS + 0x9C
r_df_cs         equ RESULTS + 0xA0
r_unexpected    equ RESULTS + 0xA4

%macro STORE_ACC 2                  ; %1 = slot, %2 = selector: the descriptor's access byte
    movzx eax, byte [gdt + (%2) + 5]
    mov [%1], eax
%endmacro
%macro STORE_TR 1
    str ax
    movzx eax, ax
    mov [%1], eax
%endmacro
%macro STORE_NT 1
    pushfd
    pop eax
    and eax, EFLAGS_NT
    mov [%1], eax
%endmacro
; Initial state of a TSS at %1: EIP %2, ESP %3, flat ring-0 segments, CR3 %4.
%macro INIT_TSS 4
    mov dword [%1 + T_EIP], %2
    mov dword [%1 + T_ESP], %3
    mov dword [%1 + T_EFLAGS], 2
    mov dword [%1 + T_CR3], %4
    mov dword [%1 + T_CS], SEL_CODE0
    mov dword [%1 + T_SS], SEL_DATA0
    mov dword [%1 + T_DS], SEL_DATA0
    mov dword [%1 + T_ES], SEL_DATA0
    mov dword [%1 + T_FS], SEL_DATA0
    mov dword [%1 + T_GS], SEL_DATA0
    mov word [%1 + T_IOMAP], 104
%endmacro

start:
    ENTER_PM32 pm_main, 0x9F000

pm_main:
    SET_GATE 13, unexpected, GATE_INT32, idt
    SET_GATE 14, unexpected, GATE_INT32, idt
    ; #DF: a task gate to the double-fault TSS.
    mov word [idt + 8 * 8 + 2], SEL_TSS_DF
    mov byte [idt + 8 * 8 + 5], GATE_TASK
    lidt [idt_desc]
    mov word [tss_main + T_IOMAP], 104
    INIT_TSS tss_b, task_b, 0x70000, 0
    INIT_TSS tss_c, task_c, 0x71000, 0
    INIT_TSS tss_df, task_df, 0x72000, PAGE_DIR
    mov ax, SEL_TSS_MAIN
    ltr ax
    STORE_ACC r_main_acc0, SEL_TSS_MAIN

    ; ---- Part A: JMP to task B, which JMPs back ----
    mov eax, 0x11110000
main_jmp:
    jmp SEL_TSS_B:0
main_after_jmp:
    mov [r_a_eax], eax
    STORE_TR r_a_tr
    STORE_ACC r_a_b_acc, SEL_TSS_B
    STORE_ACC r_a_main_acc, SEL_TSS_MAIN
    mov eax, [tss_b + T_EIP]
    mov [r_b_saved_eip], eax

    ; ---- CALL through a task gate to task C, which IRETs back ----
    mov eax, 0x22220000
    call SEL_GATE_C:0
main_after_call:
    mov [r_r_eax], eax
    STORE_NT r_r_nt
    STORE_TR r_r_tr
    STORE_ACC r_r_c_acc, SEL_TSS_C
    STORE_ACC r_r_main_acc, SEL_TSS_MAIN
    mov eax, [tss_c + T_EFLAGS]
    mov [r_r_c_eflags], eax
    mov eax, [tss_c + T_EIP]
    mov [r_r_c_eip], eax
    movzx eax, word [tss_c + T_LINK]
    mov [r_r_c_link], eax

    ; ---- Part B: double fault through a task gate ----
    mov edi, PAGE_DIR
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [PAGE_DIR], 0x87          ; 0..4 MiB: one 4 MiB page, user, writable
    mov eax, cr4
    or eax, 1 << 4                      ; PSE
    mov cr4, eax
    mov eax, PAGE_DIR
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    mov dword [tss_main + T_ESP0], BAD_KSTACK
    mov dword [tss_main + T_SS0], SEL_DATA0
    push dword SEL_DATA3
    push dword 0x80000
    push dword 2
    push dword SEL_CODE3
    push dword user
    iretd

user:
    mov eax, 0x33330000
u_fault:
    mov ebx, [USER_FAULT_ADDR]          ; #PF; its delivery faults again → #DF task
    jmp $

; ---- task B (entered by JMP) ----
task_b:
    STORE_TR r_b_tr
    STORE_NT r_b_nt
    movzx eax, word [tss_b + T_LINK]
    mov [r_b_link], eax
    STORE_ACC r_b_main_acc, SEL_TSS_MAIN
    STORE_ACC r_b_own_acc, SEL_TSS_B
    mov eax, [tss_main + T_EIP]
    mov [r_b_main_eip], eax
    mov eax, [tss_main + T_EAX]
    mov [r_b_main_eax], eax
    jmp SEL_TSS_MAIN:0
b_after_jmp:
    jmp unexpected

; ---- task C (entered by CALL through a task gate) ----
task_c:
    STORE_TR r_c_tr
    STORE_NT r_c_nt
    movzx eax, word [tss_c + T_LINK]
    mov [r_c_link], eax
    STORE_ACC r_c_main_acc, SEL_TSS_MAIN
    STORE_ACC r_c_own_acc, SEL_TSS_C
    mov eax, 0xC0DE
    iretd
c_after_iret:
    jmp unexpected

; ---- the double-fault task ----
task_df:
    STORE_TR r_df_tr
    movzx eax, word [tss_df + T_LINK]
    mov [r_df_link], eax
    STORE_NT r_df_nt
    mov [r_df_esp], esp
    mov eax, [esp]                      ; the #DF error code, pushed on this task's stack
    mov [r_df_err], eax
    mov eax, cr2
    mov [r_df_cr2], eax
    mov eax, [tss_main + T_EIP]
    mov [r_df_old_eip], eax
    movzx eax, word [tss_main + T_CS]
    mov [r_df_old_cs], eax
    mov eax, [tss_main + T_ESP]
    mov [r_df_old_esp], eax
    movzx eax, word [tss_main + T_SS]
    mov [r_df_old_ss], eax
    mov eax, [tss_main + T_EAX]
    mov [r_df_old_eax], eax
    STORE_ACC r_df_main_acc, SEL_TSS_MAIN
    STORE_ACC r_df_own_acc, SEL_TSS_DF
    mov ax, cs
    movzx eax, ax
    mov [r_df_cs], eax
    FINISH

unexpected:
    mov dword [r_unexpected], 1
    hlt

; ---- tables ----
align 8
gdt:
    STD_GDT
    SYS_DESC ABS(tss_main), 103, 0x89   ; 0x28
    SYS_DESC ABS(tss_b), 103, 0x89      ; 0x30
    SYS_DESC ABS(tss_c), 103, 0x89      ; 0x38
    SYS_DESC ABS(tss_df), 103, 0x89     ; 0x40
    dw 0, SEL_TSS_C                     ; 0x48: task gate to task C
    db 0, GATE_TASK
    dw 0
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd idt
align 8
tss_main:
    times 104 db 0
tss_b:
    times 104 db 0
tss_c:
    times 104 db 0
tss_df:
    times 104 db 0
align 8
idt:
    times 256 * 8 db 0
